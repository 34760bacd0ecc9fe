/* fence.pml: the ownership protocol of several fenceproxy processes over
 * etcd (issue 14) for one resource R, checked with Spin by model/check.sh.
 * Written from the protocol text, with the changes the C code made to it
 * (below; docs/safety.md, "Model", says what it covers), not generated from
 * the C code.
 *
 * Processes: Env (the clock, etcd applying late txns, the storage applying
 * requests) and one Proxy per fenceproxy process. A Proxy is one event loop:
 * each of its steps is one atomic handler. A process that takes no step
 * while the clock ticks is paused (GC, SIGSTOP, swap) between two handlers,
 * for any number of ticks; Env interleaves freely with both.
 *
 * Time: ticks. Every timer counts the ticks it has left (no absolute times,
 * so the state space does not grow with the time explored): each proxy's
 * fence_at and lock-delay, etcd's lease TTLs, each request's upstream
 * deadline. All clocks run at one rate (the margin covers the drift).
 *
 * etcd: tok/R, own/R (holder lease, epoch = its create revision), clean/R,
 * want/R (holder lease) and one TTL per lease, linearizable. An acquire or a
 * release is applied when the proxy sends it (a txn applied later is the
 * same as one sent later: the proxy does nothing for R meanwhile). An
 * advance may also stay in the network: the proxy gives up on it (unknown
 * outcome, 503) and etcd applies it at any later time or never.
 *
 * Storage (A-timing): a request whose last byte went at t is applied at any
 * time before t + upstream_timeout, or never. A forward is one step: the
 * whole request at the time of its last byte, checked against fence_at in
 * the same step (SPLIT_SEND shows why). A request cut before its last byte
 * is never applied, so it is not modelled.
 *
 * Checked: the assertions STALE, S3N, APPLY (docs/safety.md) and invalid end
 * states; with -DLIVE, the LTL property waits_end (a request that waits for
 * R gets it or answers 503 when its bounded wait runs out).
 *
 * Changes to the protocol text, as the C code has them
 * (store/st_store_etcd.c): a release puts clean/R only if the owner's
 * lock-delay is over (release_one; -DCLEAN_IN_DELAY, the text as it was,
 * fails S3N); a waiter whose bounded wait ends deletes its want/R
 * (want_drop; -DKEEP_WANT leaves it); an acquire that finds own/R on its own
 * lease takes R back, after the lock-delay when tok/R is present, and leaves
 * clean/R alone (acq_result; -DNO_ADOPT refuses it as the text did,
 * -DADOPT_NO_DELAY takes it back at once, which fails S3N).
 *
 * Availability assertions: FIND_STALE_WANT (R free but refused for a
 * want/R whose waiter gave up) and FIND_ORPHAN_OWN (an acquire whose answer
 * came leaves own/R of its lease unknown to it; with ACQ_LOSS) must pass.
 * Two gaps the code still has must fail: FENCED_KEEPS_WANT with
 * FIND_STALE_WANT (an acquisition tried past fence_at answers 503 without
 * want_drop) and FIND_IDLE_ORPHAN with ACQ_LOSS (a lost acquire answer ends
 * its request with 503; own/R stays until that process asks for R again).
 *
 * Variants that must fail: NO_WAIT, NO_EPOCH, NO_FENCE (broken protocols),
 * CLEAN_IN_DELAY, KEEP_WANT, NO_ADOPT (the text before the changes above),
 * ADOPT_NO_DELAY, SPLIT_SEND (the check and the send in two steps),
 * FENCED_KEEPS_WANT and FIND_IDLE_ORPHAN (the gaps above),
 * NO_BOUND (with LIVE: a wait without its bound). */

#define NP 2          /* proxies */
#define NL 4          /* lease ids: 2p is proxy p's, 2p + 1 its crashed predecessor's */
#ifndef NREQ
#define NREQ 3        /* client requests in all (either proxy's client) */
#endif
#define NS NREQ       /* storage slots: one per request */
#ifndef TTL
#define TTL 3         /* lease_ttl */
#endif
#ifndef MARGIN
#define MARGIN 1      /* margin (self-fencing and lock-delay) */
#endif
#ifndef UT
#define UT 3          /* upstream_timeout */
#endif
#ifndef HWAIT
#define HWAIT 3       /* handover_wait (with LIVE; else any length) */
#endif
/* NO_IDLE: no idle release (it is released after own_idle of any length). */
#ifndef CRASHES
#define CRASHES 1     /* kill -9 + restart, in the whole run */
#endif
/* Lost answers of keepalives (KA_LOSS), acquires (ACQ_LOSS), releases
 * (REL_LOSS): off by default. A lost keepalive or release answer only keeps
 * a proxy from forwarding while etcd still counts it as the owner, so they
 * add no forwarding behaviour. An acquire whose answer is lost leaves own/R
 * on the proxy's lease, which its next acquire takes back and forwards
 * under: the ORPHAN_OWN run (ACQ_LOSS) checks STALE, S3N and APPLY with it. */
#define NONE 7

/* ---- etcd ---- */
byte tok = 0;         /* tok/R; 0 = absent. Tokens are 1 or 2. */
byte own = NONE;      /* own/R: the holder's lease id */
byte own_ep = 0;      /* own/R's create revision (the epoch) */
bool clean = 0;       /* clean/R */
byte want = NONE;     /* want/R: the waiter's lease id */
byte lttl[NL];        /* ticks left on each lease; 0 = gone */

/* ---- an advance txn of proxy p still in the network ---- */
bool adv_pend[NP];
byte adv_tok[NP], adv_ep[NP];

/* ---- the storage ---- */
byte s_tok[NS];       /* token in flight, 0 = none */
byte s_dl[NS];        /* ticks left before its upstream deadline */
byte s_by[NS];        /* its proxy, or CRASHED: its process crashed since */
#define CRASHED 2
byte applied = 0;     /* the last token the storage applied */

/* ---- each proxy process ---- */
byte fence[NP];       /* ticks left before fence_at */
byte phase[NP];       /* its client's request: 0 none, 1 waits for R and
                         admission, 3 admitted, waits to be forwarded,
                         4 (SPLIT_SEND) checked, not yet written */
byte rt[NP];          /* that request's token */
byte nreq = 0;        /* requests sent by all clients */
bool owns[NP], durable[NP], draining[NP];
byte my_ep[NP], cache[NP];
byte delay[NP];       /* ticks left of the lock-delay */
byte crashes = CRASHES;
#ifdef LIVE
byte wait[NP];        /* ticks left of the bounded wait (phase 1) */
bool ka_done[NP], acq_done[NP], rel_done[NP]; /* at most one per tick */
#endif

/* LIVE: at most one keepalive, acquire and release per tick and proxy, so
 * that every infinite run has infinitely many ticks. Set in the step. */
#ifdef LIVE
#define ONCE_A_TICK(f) (!f[p])
#define DONE_THIS_TICK(f) f[p] = 1
#else
#define ONCE_A_TICK(f) true
#define DONE_THIS_TICK(f) skip
#endif
#define LEASE(p) (2 * (p))       /* its lease */
#define OLD_LEASE(p) (2 * (p) + 1) /* its crashed predecessor's, until it expires */
#define ALLDONE (nreq == NREQ && phase[0] == 0 && phase[1] == 0)
#ifdef NO_FENCE
#define UNFENCED(p) true
#else
#define UNFENCED(p) (fence[p] > 0)
#endif

/* The request ends (answered). */
inline req_end(p)
{
    phase[p] = 0; rt[p] = 0
#ifdef LIVE
    ; wait[p] = 0
#endif
}

/* R is no longer owned (locally). */
inline lose(p)
{
    owns[p] = 0; my_ep[p] = 0; cache[p] = 0; durable[p] = 0; delay[p] = 0; draining[p] = 0
}

/* A waiter gives up (503): it deletes want/R if want/R is its own
 * (want_drop; KEEP_WANT: it stays, as the protocol's text had it). */
inline drop_want(p)
{
#ifndef KEEP_WANT
    if :: want == LEASE(p) -> want = NONE :: else -> skip fi
#else
    skip
#endif
}

/* An epoch that no proxy and no txn refers to: epochs are only compared for
 * equality, so reusing a forgotten one is the same as a new revision. */
inline fresh_epoch(e)
{
    e = 1;
    do
    :: (e == my_ep[0] || e == my_ep[1] ||
        (adv_pend[0] && e == adv_ep[0]) || (adv_pend[1] && e == adv_ep[1])) -> e++
    :: else -> break
    od
}

/* etcd applies an advance of R to t under epoch e: if create(own/R)==e
 * { raise tok/R to t if lower; read tok/R } else deposed. */
inline etcd_advance(t, e, ok)
{
#ifdef NO_EPOCH
    if
    :: true ->
#else
    if
    :: own != NONE && own_ep == e ->
#endif
        if :: tok < t -> tok = t :: else -> skip fi;
        ok = 1
    :: else -> ok = 0
    fi
}

inline store_apply(s)
{
    printf("MSC: storage applies token %d (slot %d)\n", s_tok[s], s);
    assert(s_tok[s] >= applied); /* APPLY */
    applied = s_tok[s];
    s_tok[s] = 0; s_dl[s] = 0; s_by[s] = 0
}

/* One tick of every timer. */
inline tick()
{
    i = 0;
    do
    :: i < NP ->
        if :: fence[i] > 0 -> fence[i]-- :: else -> skip fi;
        if :: delay[i] > 0 -> delay[i]-- :: else -> skip fi;
#ifdef LIVE
        /* the bounded wait's timer fires in the tick: 503 */
        if :: wait[i] > 0 -> wait[i]-- :: else -> skip fi;
#ifndef NO_BOUND
        if
        :: phase[i] == 1 && wait[i] == 0 -> req_end(i); drop_want(i)
        :: else -> skip
        fi;
#endif
        ka_done[i] = 0; acq_done[i] = 0; rel_done[i] = 0;
#endif
        i++
    :: else -> break
    od;
    i = 0;
    do
    :: i < NL ->
        if
        :: lttl[i] > 0 ->
            lttl[i]--;
            if
            :: lttl[i] == 0 -> /* the lease expires, and its keys */
                printf("MSC: lease %d expires\n", i);
                if :: own == i -> own = NONE; own_ep = 0 :: else -> skip fi;
                if :: want == i -> want = NONE :: else -> skip fi
            :: else -> skip
            fi
        :: else -> skip
        fi;
        i++
    :: else -> break
    od;
    i = 0;
    do
    :: i < NS ->
        if
        :: s_tok[i] != 0 ->
            s_dl[i]--;
            if /* its deadline passed: never applied */
            :: s_dl[i] == 0 -> s_tok[i] = 0; s_by[i] = 0
            :: else -> skip
            fi
        :: else -> skip
        fi;
        i++
    :: else -> break
    od;
    i = 0
}

active proctype Env()
{
    byte i;
    bool ok;
end:
    do
    :: atomic { !ALLDONE -> tick(); printf("MSC: tick\n") }
    /* a late advance lands; nobody reads its answer */
    :: atomic { adv_pend[0] -> etcd_advance(adv_tok[0], adv_ep[0], ok);
                printf("MSC: P0's late advance to %d lands: %d, tok/R %d\n", adv_tok[0], ok, tok);
                adv_pend[0] = 0; adv_tok[0] = 0; adv_ep[0] = 0; ok = 0 }
    :: atomic { adv_pend[1] -> etcd_advance(adv_tok[1], adv_ep[1], ok);
                printf("MSC: P1's late advance to %d lands: %d, tok/R %d\n", adv_tok[1], ok, tok);
                adv_pend[1] = 0; adv_tok[1] = 0; adv_ep[1] = 0; ok = 0 }
    :: atomic { s_tok[0] != 0 -> store_apply(0) }
    :: atomic { s_tok[1] != 0 -> store_apply(1) }
#if NS > 2
    :: atomic { s_tok[2] != 0 -> store_apply(2) }
#endif
#if NS > 3
    :: atomic { s_tok[3] != 0 -> store_apply(3) }
#endif
#if NS > 4
#error "more than 4 storage slots: add store_apply lines"
#endif
    od
}

/* No request of this process in flight to the storage with another token
 * than t (the local S3: a request sent whole stays in flight until it is
 * answered or its upstream deadline passed, even if its connection was
 * closed at fence_at). A crashed process's requests are forgotten. */
#define MINE_OTHER(p, t, k) (s_tok[k] != 0 && s_by[k] == (p) && s_tok[k] != (t))
#if NS == 3
#define LOCAL_S3(p, t) (!MINE_OTHER(p, t, 0) && !MINE_OTHER(p, t, 1) && !MINE_OTHER(p, t, 2))
#elif NS == 4
#define LOCAL_S3(p, t) (!MINE_OTHER(p, t, 0) && !MINE_OTHER(p, t, 1) && !MINE_OTHER(p, t, 2) && \
                        !MINE_OTHER(p, t, 3))
#else
#error "NREQ must be 3 or 4"
#endif
#define NOTHING_IN_FLIGHT(p) LOCAL_S3(p, 0)

/* A new lease for process p (after "lease gone" or a restart); its id is
 * reused, as nothing refers to a gone lease. */
inline new_lease(p)
{
    lttl[LEASE(p)] = TTL;
    fence[p] = TTL - MARGIN
}

proctype Proxy(byte p)
{
    byte s;
    bool ok;
    do
    /* its client sends a request, token 1 or 2 */
    :: atomic {
        phase[p] == 0 && nreq < NREQ ->
        if :: rt[p] = 1 :: rt[p] = 2 fi;
        printf("MSC: P%d request token %d\n", p, rt[p]);
        nreq++;
        phase[p] = 1
#ifdef LIVE
        ; wait[p] = HWAIT
#endif
       }
    /* admission (S1, S2): it owns R, is not handing it over, not fenced */
    :: atomic {
        phase[p] == 1 && owns[p] && !draining[p] && UNFENCED(p) ->
#ifdef LIVE
        wait[p] = 0;
#endif
        if
        :: rt[p] < cache[p] -> printf("MSC: P%d 409\n", p); req_end(p) /* 409 */
        :: rt[p] == cache[p] && durable[p] -> phase[p] = 3
        :: else -> /* raised in memory at once; the advance txn first */
            cache[p] = rt[p]; durable[p] = 0;
            if
            :: true -> etcd_advance(rt[p], my_ep[p], ok);
                if
                :: ok && tok > rt[p] -> /* it read a higher one: 409 */
                    printf("MSC: P%d advance read %d: 409\n", p, tok);
                    cache[p] = tok; durable[p] = 1; req_end(p)
                :: ok && tok == rt[p] -> durable[p] = 1; phase[p] = 3;
                    printf("MSC: P%d advance to %d ok\n", p, tok)
                :: else -> /* deposed: stop, take R again before admitting */
                    printf("MSC: P%d advance: deposed\n", p);
                    lose(p);
                    req_end(p) /* 503 */
                fi
            :: !adv_pend[p] -> /* no answer in time: 503. It may land later
                                 * (or never, or at once: a lost answer) */
                adv_pend[p] = 1; adv_tok[p] = rt[p]; adv_ep[p] = my_ep[p];
                printf("MSC: P%d advance to %d: no answer, 503\n", p, rt[p]);
                req_end(p)
            :: adv_pend[p] -> req_end(p) /* lost, never applied: 503 */
            fi;
            ok = 0
        fi
       }
    /* acquire R: one txn. If create(own/R)==0 and (want/R absent or mine):
     * put own/R (lease L); read+delete clean/R; delete want/R; read tok/R.
     * Else read own/R and want/R: own/R on lease L is taken back (then tok/R
     * read); otherwise put want/R if absent (lease L). A gone lease fails
     * the puts. (store/st_store_etcd.c: acq_build, acq_result.) */
    :: atomic {
        phase[p] == 1 && !owns[p] && ONCE_A_TICK(acq_done) ->
        DONE_THIS_TICK(acq_done);
        if
        :: lttl[LEASE(p)] == 0 -> skip
        :: else -> skip;
#ifdef FIND_STALE_WANT
            /* R is free but refused for a want/R of a running process's
             * lease whose waiter gave up (a crashed waiter's want/R lasts
             * until its lease expires, as its own/R would) */
            assert(!(own == NONE && want != NONE && want != LEASE(p) && want % 2 == 0 &&
                     phase[want / 2] != 1));
#endif
#ifdef FIND_IDLE_ORPHAN
            /* refused for own/R of the other process's lease, which does
             * not know it holds R and is not asking for it */
            assert(!(own == LEASE(1 - p) && !owns[1 - p] && phase[1 - p] != 1));
#endif
            if
            :: own == NONE && (want == NONE || want == LEASE(p)) ->
                own = LEASE(p);
                fresh_epoch(own_ep);
                printf("MSC: P%d acquires R: tok/R %d, clean/R %d\n", p, tok, clean);
                if
                :: owns[p] = 1; my_ep[p] = own_ep; cache[p] = tok; durable[p] = 1;
#ifdef NO_WAIT
                    delay[p] = 0
#else
                    /* lock-delay: R was owned and not released cleanly */
                    if
                    :: !clean && tok != 0 -> delay[p] = UT + MARGIN
                    :: else -> delay[p] = 0
                    fi
#endif
#ifdef ACQ_LOSS
                :: ok = 1; /* the answer is lost: R is ours in etcd only */
                    printf("MSC: P%d: the answer is lost\n", p)
#endif
                fi;
                clean = 0;
                want = NONE
#ifndef NO_ADOPT
            :: own == LEASE(p) ->
                /* own/R of our lease: an acquire whose answer was lost (the
                 * model has no release that fails with own/R left). It may
                 * have taken R from an expired owner and deleted clean/R,
                 * so the lock-delay whenever R was ever written (tok/R).
                 * clean/R is neither read nor deleted: it is never there
                 * while own/R is, which the assertion checks. */
                assert(!clean);
                owns[p] = 1; my_ep[p] = own_ep; cache[p] = tok; durable[p] = 1;
#if defined(NO_WAIT) || defined(ADOPT_NO_DELAY)
                delay[p] = 0;
#else
                if
                :: tok != 0 -> delay[p] = UT + MARGIN
                :: else -> delay[p] = 0
                fi;
#endif
                printf("MSC: P%d finds own/R on its lease: takes R back, tok/R %d\n", p, tok)
#endif
            :: else ->
                if :: want == NONE -> want = LEASE(p) :: else -> skip fi;
                printf("MSC: P%d acquire refused, want/R %d\n", p, want)
            fi
        fi;
#ifdef FIND_ORPHAN_OWN
        /* an acquire whose answer came leaves no own/R of its lease that
         * the process does not know it holds */
        assert(ok || !(own == LEASE(p) && !owns[p]));
#endif
        ok = 0
       }
    /* the bounded wait runs out: 503; want/R is deleted if it is ours */
#ifndef LIVE
    :: atomic { phase[p] == 1 -> printf("MSC: P%d wait over: 503\n", p); req_end(p); drop_want(p) } /* of any length */
#endif
#ifdef FENCED_KEEPS_WANT
    /* the code today: an acquisition tried at or past fence_at answers 503
     * at once (acq_try_due), without want_drop */
    :: atomic { phase[p] == 1 && !owns[p] && fence[p] == 0 ->
                printf("MSC: P%d fenced: 503, want/R %d stays\n", p, want); req_end(p) }
#endif
    /* forward (S3, lock-delay, self-fencing) */
    :: atomic {
        phase[p] == 3 && owns[p] && UNFENCED(p) && delay[p] == 0 &&
        rt[p] == cache[p] && durable[p] && LOCAL_S3(p, rt[p]) ->
#ifdef SPLIT_SEND
        phase[p] = 4 /* checked; the process may pause before it writes */
       }
    :: atomic {
        phase[p] == 4 ->
#endif
        printf("MSC: P%d forwards token %d\n", p, rt[p]);
        assert(rt[p] >= tok); /* STALE */
        s = 0;
        do /* S3N */
        :: s < NS -> assert(s_tok[s] == 0 || s_tok[s] == rt[p]); s++
        :: else -> break
        od;
        s = 0; /* the first free slot: there is one per request */
        do
        :: s_tok[s] != 0 -> s++
        :: else -> break
        od;
        s_tok[s] = rt[p]; s_dl[s] = UT; s_by[s] = p;
        req_end(p);
        s = 0
       }
    /* an admitted request gives up (lock-delay, fenced, client gone): 503 */
    :: atomic { phase[p] == 3 -> printf("MSC: P%d gives up: 503\n", p); req_end(p) }
    /* hand-over, owner side: another proxy wants R */
    :: atomic {
        owns[p] && !draining[p] && want != NONE && want != LEASE(p) -> draining[p] = 1;
        printf("MSC: P%d sees want/R: drains\n", p)
       }
#ifndef NO_IDLE
    /* idle release: R unused (own_idle of any length) */
    :: atomic { owns[p] && !draining[p] && phase[p] == 0 -> draining[p] = 1;
                printf("MSC: P%d idle: releases\n", p) }
#endif
    /* drained: release. If create(own/R)==EPOCH: delete own/R, put clean/R */
    :: atomic {
        owns[p] && draining[p] && phase[p] < 3 && NOTHING_IN_FLIGHT(p) && ONCE_A_TICK(rel_done) ->
        DONE_THIS_TICK(rel_done);
        if
        :: own != NONE && own_ep == my_ep[p] ->
            own = NONE; own_ep = 0;
#ifdef CLEAN_IN_DELAY
            clean = 1;
#else
            clean = (delay[p] == 0);
#endif
            printf("MSC: P%d releases R, clean/R %d (lock-delay left %d)\n", p, clean, delay[p])
        :: else -> skip
        fi;
        if
        :: lose(p)
#ifdef REL_LOSS
        :: skip /* its answer is lost: tried again */
#endif
        fi
       }
    /* keepalive: one POST; fence_at = its send time + TTL - margin */
    :: atomic {
        ONCE_A_TICK(ka_done) ->
        DONE_THIS_TICK(ka_done);
        if
        :: lttl[LEASE(p)] > 0 ->
            lttl[LEASE(p)] = TTL;
            printf("MSC: P%d keepalive\n", p);
            if
            :: fence[p] = TTL - MARGIN
#ifdef KA_LOSS
            :: skip /* its answer is lost */
#endif
            fi
        :: else -> /* "lease gone": R lost, a new lease */
            printf("MSC: P%d keepalive: lease gone, new lease\n", p);
            lose(p);
            if :: phase[p] == 3 -> req_end(p) :: else -> skip fi;
            new_lease(p)
        fi
       }
    /* kill -9 and restart at once: its memory is gone, its old lease lives
     * on in etcd until it expires, what it sent may still be applied */
    :: atomic {
        crashes > 0 && lttl[OLD_LEASE(p)] == 0 ->
        crashes--;
        printf("MSC: P%d crashes and restarts\n", p);
        lttl[OLD_LEASE(p)] = lttl[LEASE(p)];
        if :: own == LEASE(p) -> own = OLD_LEASE(p) :: else -> skip fi;
        if :: want == LEASE(p) -> want = OLD_LEASE(p) :: else -> skip fi;
        lose(p);
        req_end(p);
        s = 0;
        do
        :: s < NS -> if :: s_tok[s] != 0 && s_by[s] == p -> s_by[s] = CRASHED :: else -> skip fi; s++
        :: else -> break
        od;
        s = 0;
        new_lease(p)
       }
    :: ALLDONE -> break
    od
}

init {
    atomic {
        lttl[0] = TTL; fence[0] = TTL - MARGIN;
        lttl[2] = TTL; fence[1] = TTL - MARGIN;
        run Proxy(0);
        run Proxy(1)
    }
}

#ifdef LIVE
/* for proxy 0; proxy 1 is its mirror image */
ltl waits_end { [] (phase[0] == 1 -> <> (phase[0] != 1)) }
#endif
