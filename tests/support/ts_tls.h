/* ts_tls: TLS for integration tests. Certificates made at test time by the
 * openssl command (a CA, a server certificate for localhost and 127.0.0.1,
 * a client certificate, an expired server certificate and one for a wrong
 * name), and a TLS client for raw-socket tests: ts_tls_connect() returns a
 * plain loopback TCP socket whose bytes a pump thread carries over TLS to
 * the port, so a test written for plaintext sockets runs unchanged over TLS.
 * With FENCE_TEST_TLS=1 (ts_tls_mode) the ts_proxy fixture gives its proxy
 * a [tls] section and registers its ports, and ts_connect() to a registered
 * port goes through the pump. No Criterion inside. */
#ifndef TS_TLS_H
#define TS_TLS_H

/* 1 when the environment asks fixtures to speak TLS (FENCE_TEST_TLS=1). */
int ts_tls_mode(void);

/* Makes, in dir (which exists): ca.pem ca.key, server.pem server.key
 * (CN=localhost, SAN DNS:localhost IP:127.0.0.1; serverAuth and clientAuth,
 * as etcd's gateway shows it to its own gRPC server), client.pem client.key
 * (CN=fence test client), expired.pem expired.key (the server's names,
 * expired yesterday), wrong.pem wrong.key (DNS:wrong.example only), and
 * other-ca.pem other-ca.key (a CA nobody trusts) with other-client.pem/key
 * signed by it. Returns 0, or -1 with the openssl output on stderr. */
int ts_tls_make_certs(const char *dir);

/* Connects to 127.0.0.1:port over TLS, verifying the server against ca
 * (the name 127.0.0.1), with a client certificate when cert and key are
 * not NULL. Returns a connected plaintext socket (close it when done; the
 * pump ends when either side closes, or after 10 minutes), or -1 when the
 * TCP connection or the TLS handshake failed (reason on stderr). */
int ts_tls_connect(int port, const char *ca, const char *cert, const char *key);

/* Registers port so that ts_connect(port) returns ts_tls_connect(port, ca,
 * cert, key) (strings copied); unregistered by ts_tls_port_del. At most 16
 * ports per process. */
void ts_tls_port_add(int port, const char *ca, const char *cert, const char *key);
void ts_tls_port_del(int port);

/* ts_connect's hook: -2 when port is not registered, else the result of
 * ts_tls_connect for it. */
int ts_tls_connect_registered(int port);

#endif
