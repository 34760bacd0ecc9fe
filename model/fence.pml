/* fence.pml: admission, advance, ownership and hand-over of one resource R
 * across NP fenceproxy processes sharing an etcd token store (issue 14),
 * checked with Spin by model/check.sh. Not generated from the C code: it
 * states the protocol the code must follow, with the names of
 * docs/safety.md.
 *
 * Time is one global clock `now` in ticks that advances on its own (Clock);
 * a process that takes no step while it advances is paused (GC, SIGSTOP,
 * swap), and one that never steps again has crashed. Every proxy process
 * reads the same clock (no drift; docs/safety.md states the bound on drift
 * that the margin must cover).
 *
 * etcd (one linearizable register set, as Raft gives): the own key of R
 * (owner, epoch = its create revision, attached to the owner's lease), a
 * marker `clean` that says whether the last owner released R (rather than
 * its lease expiring), R's highest, each proxy's lease expiry, and the
 * hand-over request key. A store txn sent by a proxy travels in the network
 * and is applied at any later time, or never, and the proxy may give up on
 * it first (a timeout: the outcome is unknown to it).
 *
 * The storage applies a forwarded request at any time up to UT ticks after
 * it was forwarded, or never (the timing assumption: a request the proxy let
 * go at t is applied before t + upstream_timeout or not at all).
 *
 * Checked (safety, assertions):
 *   STALE  a proxy forwards token t only if t >= etcd's highest of R (the
 *          owner's cache is authoritative: no stale token is admitted);
 *   S3N    never two different tokens in flight to the storage for R,
 *          across all proxies;
 *   APPLY  the storage never applies a token below one it applied;
 *   no invalid end state (deadlock).
 * Checked (liveness, LTL `handover` under weak fairness): a proxy that asks
 * for R gets it or gives up with 503 after its bounded wait.
 *
 * Broken variants (each must fail): NO_WAIT (a new owner after a lease
 * expiry forwards at once, without upstream_timeout + margin), NO_EPOCH
 * (store txns do not compare the own key's create revision), NO_FENCE (an
 * owner does not stop at last keepalive + TTL - margin). */

#ifndef NP
#define NP 2
#endif
#define TTL 4       /* lease TTL */
#define MARGIN 1    /* self-fencing and lock-delay margin */
#define UT 3        /* upstream_timeout */
#define HWAIT 3     /* bounded wait of a hand-over request, then 503 */
#define MAXT 10     /* ticks explored */
#define MAXTOK 2    /* tokens 1..MAXTOK */
#define NREQ 1      /* requests per proxy */
#define NONE 255

byte now = 0;

/* etcd */
byte owner = NONE;
byte epoch = 0;
byte rev = 0;
bool clean = 1;
byte highest = 0;
byte lease_exp[NP];
byte hreq = NONE;
/* store txns in the network: token, epoch compared, state 0 none, 1 sent,
 * 2 applied ok, 3 refused; highest it answered */
byte txn_tok[NP], txn_ep[NP], txn_st[NP], txn_high[NP];

/* storage */
byte inflight[NP], sent_at[NP];
byte applied_max = 0;

/* each proxy's own state */
bool owns[NP];
byte my_ep[NP], cache[NP], fence_at[NP], go_after[NP];
bool draining[NP], busy[NP];
/* liveness bookkeeping: asked = waiting for R; resolved = got it or 503 */
bool asked[NP];

inline forward(p, t)
{
    /* STALE */
    assert(t >= highest);
    /* S3N */
    byte q = 0;
    do
    :: q < NP ->
        if
        :: q != p && inflight[q] != 0 && now <= sent_at[q] + UT -> assert(inflight[q] == t)
        :: else -> skip
        fi;
        q++
    :: else -> break
    od;
    inflight[p] = t;
    sent_at[p] = now
}

active proctype Clock()
{
end:
    do
    :: atomic { now < MAXT -> now++ }
    od
}

/* A txn of proxy p in the network is applied (with the epoch compare unless
 * NO_EPOCH). */
inline apply_txn(p)
{
#ifdef NO_EPOCH
    if :: true ->
#else
    if :: owner == p && epoch == txn_ep[p] ->
#endif
        if :: highest < txn_tok[p] -> highest = txn_tok[p] :: else -> skip fi;
        txn_high[p] = highest;
        txn_st[p] = 2
    :: else -> txn_st[p] = 3
    fi
}

/* etcd's own steps: lease expiry deletes the own key; txns are applied. */
active proctype Etcd()
{
end:
    do
    :: atomic { owner != NONE && now > lease_exp[owner] -> owner = NONE; clean = 0 }
    :: atomic { txn_st[0] == 1 -> apply_txn(0) }
    :: atomic { txn_st[1] == 1 -> apply_txn(1) }
#if NP > 2
    :: atomic { txn_st[2] == 1 -> apply_txn(2) }
#endif
    od
}

/* The storage applies a forwarded request in time, or it is lost. */
inline store_one(p)
{
    if
    :: now <= sent_at[p] + UT ->
        assert(inflight[p] >= applied_max); /* APPLY */
        applied_max = inflight[p]
    :: else -> skip /* never applied (timing assumption) */
    fi;
    inflight[p] = 0
}

active proctype Storage()
{
end:
    do
    :: atomic { inflight[0] != 0 -> store_one(0) }
    :: atomic { inflight[1] != 0 -> store_one(1) }
#if NP > 2
    :: atomic { inflight[2] != 0 -> store_one(2) }
#endif
    od
}

/* Keepalive: one POST; the lease's expiry moves to now + TTL, the proxy's
 * self-fencing deadline to (send time) + TTL - MARGIN. A lease found expired
 * loses every ownership and a new lease (a new identity) is granted. */
proctype Keep(byte p)
{
end:
    do
    :: atomic {
        /* renews one tick before its deadline, or later if it was paused */
        now <= lease_exp[p] && now + 1 >= fence_at[p] && fence_at[p] < now + TTL - MARGIN ->
        lease_exp[p] = now + TTL;
        fence_at[p] = now + TTL - MARGIN
       }
    :: atomic {
        now > lease_exp[p] ->
        /* etcd deleted the keys of the expired lease */
        if :: owner == p -> owner = NONE; clean = 0 :: else -> skip fi;
        owns[p] = 0; draining[p] = 0;
        lease_exp[p] = now + TTL;
        fence_at[p] = now + TTL - MARGIN
       }
    od
}

/* The owner's side of a hand-over: on a request by another proxy, stop
 * admitting, drain (the request in flight completes or passes its upstream
 * deadline; one waiting for its txn ends), release R (only its own epoch)
 * with the clean marker. */
proctype Serve(byte p)
{
end:
    do
    :: atomic { owns[p] && !draining[p] && hreq != NONE && hreq != p -> draining[p] = 1 }
    :: atomic {
        owns[p] && draining[p] && !busy[p] &&
        (inflight[p] == 0 || now > sent_at[p] + UT) ->
        if
        :: owner == p && epoch == my_ep[p] -> owner = NONE; clean = 1
        :: else -> skip
        fi;
        owns[p] = 0;
        draining[p] = 0
       }
    od
}

/* Requests through proxy p: NREQ of them, any token (stale ones too). */
proctype Req(byte p)
{
    byte t, n = 0, asked_at;
    do
    :: n < NREQ && inflight[p] == 0 ->
        n++;
        select(t : 1 .. MAXTOK);
        /* ownership: take R if free, else ask and wait (bounded) */
        if
        :: owns[p] -> skip
        :: else ->
            atomic { asked[p] = 1; asked_at = now }
            do
            :: atomic {
                owner == NONE && now <= lease_exp[p] && !owns[p] ->
                owner = p; rev++; epoch = rev; my_ep[p] = rev; owns[p] = 1;
                cache[p] = highest; /* read in the same txn */
#ifdef NO_WAIT
                go_after[p] = now;
#else
                /* lock-delay unless the last owner released R itself */
                go_after[p] = (clean -> now : now + UT + MARGIN);
#endif
                if :: hreq == p -> hreq = NONE :: else -> skip fi;
                asked[p] = 0;
                break
               }
            :: atomic { owner != NONE && owner != p && hreq == NONE -> hreq = p }
            :: atomic {
                (now > asked_at + HWAIT || now == MAXT) ->
                if :: hreq == p -> hreq = NONE :: else -> skip fi;
                asked[p] = 0;
                break /* 503 with Retry-After */
               }
            od
        fi;
        /* admission: owner, not draining, not self-fenced (S6) */
        atomic {
            if
#ifdef NO_FENCE
            :: owns[p] && !draining[p] ->
#else
            :: owns[p] && !draining[p] && now < fence_at[p] ->
#endif
                if
                :: t < cache[p] -> skip /* 409 (S1) */
                :: t == cache[p] -> busy[p] = 1
                :: t > cache[p] && txn_st[p] != 0 -> skip /* 503: one txn at a time */
                :: t > cache[p] && txn_st[p] == 0 ->
                    /* S1: raised in memory at once; S2: the txn first */
                    cache[p] = t;
                    txn_tok[p] = t; txn_ep[p] = my_ep[p]; txn_st[p] = 1;
                    busy[p] = 1
                fi
            :: else -> skip /* 503 */
            fi
        }
        if
        :: busy[p] && txn_st[p] == 1 ->
            if
            :: atomic { txn_st[p] == 2 ->
                if :: txn_high[p] > cache[p] -> cache[p] = txn_high[p] :: else -> skip fi;
                txn_st[p] = 0
               }
            :: atomic { txn_st[p] == 3 -> txn_st[p] = 0; busy[p] = 0 } /* deposed: 503 */
            :: atomic { txn_st[p] == 1 -> busy[p] = 0 }
                /* timeout: 503; the txn may still land. cache stays raised. */
            fi
        :: else -> skip
        fi;
        /* forward once durable and in time */
        if
        :: busy[p] ->
            atomic {
                if
#ifdef NO_FENCE
                :: t == cache[p] && now >= go_after[p] ->
#else
                :: t == cache[p] && now >= go_after[p] && now < fence_at[p] ->
#endif
                    forward(p, t)
                :: else -> skip /* 409, 503, or still in the lock-delay: 503 */
                fi;
                busy[p] = 0
            }
        :: else -> skip
        fi
    :: n == NREQ -> break
    od;
end:
    skip
}

init {
    byte p;
    atomic {
        p = 0;
        do
        :: p < NP ->
            lease_exp[p] = TTL;
            fence_at[p] = TTL - MARGIN;
            run Keep(p);
            run Serve(p);
            run Req(p);
            p++
        :: else -> break
        od
    }
}

#if NP > 2
ltl handover { [] ((asked[0] -> <> !asked[0]) && (asked[1] -> <> !asked[1]) &&
                   (asked[2] -> <> !asked[2])) }
#else
ltl handover { [] ((asked[0] -> <> !asked[0]) && (asked[1] -> <> !asked[1])) }
#endif
