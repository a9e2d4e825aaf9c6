/* tcp_proxy sessions: a downstream connection, an upstream connection, and the relay between
 * them.
 *
 * The relay is one set of functions parametrized by side (conn_read moves bytes from a conn
 * into its peer's output buffer; conn_flush writes a conn's output buffer), as in nginx's
 * ngx_stream_proxy_process(). Backpressure: a conn stops reading while its peer's pending
 * output is at or above the peer's per_connection_buffer_limit_bytes and resumes once that
 * output drains below half of it. Half-close travels per direction: EOF read from one side
 * becomes end_stream on the other side's write once everything before it has been written.
 * A session ends when both directions are done, on an error, a reset (propagated as a reset),
 * a timeout, or a forced stop.
 *
 * Upstream connects: a refused or timed-out connect tries another host, up to tcp_proxy's
 * max_connect_attempts (Envoy's knob, default 1, validated >= 1 as in Envoy's
 * envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto, no upper bound there either);
 * bytes the client sent meanwhile stay queued in the upstream conn's output buffer, which
 * survives the retry. Retries always go back to the loop, after a short exponential backoff
 * (CONNECT_BACKOFF_*): a refused connect on loopback fails within microseconds, so retrying at
 * once made a large max_connect_attempts a busy loop (27 million connects in 10 minutes at 93%
 * CPU for one client); Envoy retries without backoff unless backoff_options is set, but through
 * its connection pool, never in a loop. The first retries stay near-immediate (1, 2, 4 ms: the
 * usual case is a next host that answers), a host that stays down costs one connect per
 * CONNECT_BACKOFF_MAX_MS. A client that ends its side (FIN) before any upstream answered may
 * be half-closed or gone, which TCP cannot tell apart: from then on each host gets at most one
 * more try; a client reset ends the session at once. Circuit breakers (the cluster's
 * max_connections, the listener's connection_limit filter) are their owners' bookkeeping: the
 * session takes and returns slots through cluster_admit/_release and listener_admit/_release.
 *
 * Who closed: an upstream connection counts upstream_cx_destroy_remote when the upstream ended
 * first (its EOF or reset came before anything from downstream or any local decision such as a
 * timeout), upstream_cx_destroy_local otherwise. Rejected: Envoy's "whoever completed the last
 * half" rule, which calls an upstream that hung up first "local" once the client answers the
 * close; an SRE reading the counters asks who hung up first.
 *
 * Filter chains: a session starts without one. With tls_inspector in the listener's
 * listener_filters it first peeks the ClientHello (inspect.h: no byte consumed, a level-triggered
 * EV_READ bounded by SO_RCVLOWAT, listener_filters_timeout on its own timer); then
 * cfg_chain_select picks the chain with Envoy's order (config/chain_select.c) and the session
 * takes the chain's cluster, tcp_proxy settings, transport socket and, as Envoy creates the
 * connection only then, its connection id. No chain (and no default) closes it, counted in
 * no_filter_chain_match. Rejected: a separate "pending connection" object for the peek phase
 * (the worker's drain, forced stop and generation references would each need a second list).
 *
 * Config: a session reads its listener, cluster, hosts and transport-socket configs, stats ids,
 * circuit-breaker counts and LB state only from the config generation it was accepted under
 * (s->g, a reference dropped last in session_free), so a reload never changes or frees them under
 * a running connection (gen.h).
 *
 * Closing is safe by construction: libevent callbacks are the only entry points, each one runs
 * to completion and ends in session_settle(), the single place that decides to free; nothing
 * touches the session after it is freed. Events are level-triggered and added/removed only when
 * the wanted set changes. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "core/access_format.h"
#include "core/access_log.h"
#include "core/conn_id.h"
#include "core/log.h"
#include "core/sockaddr_text.h"
#include "net/cluster.h"
#include "net/inspect.h"
#include "net/listener.h"
#include "net/session.h"
#include "net/worker.h"
#include "transport/ts_registry.h"

#define MIN_READ_CHUNK          (16u * 1024u)
#define RETRY_US                1000 /* a held session without a helper's signal (session_resume_held) */
#define CONNECT_BACKOFF_BASE_MS 1u   /* before the first retry; doubles per retry */
#define CONNECT_BACKOFF_MAX_MS  500u /* a host that stays down: two connects a second */
#define CONNECT_FAIL_LOG_PER_S  10u  /* upstream connect failures logged at info per worker */

enum side { DOWN = 0, UP = 1 };

/* Who ended the session first, for upstream_cx_destroy_remote/_local (see the top of the file). */
enum ended_first {
    ENDED_NONE,       /* nobody yet */
    ENDED_DOWNSTREAM, /* the client's EOF or error came first */
    ENDED_UPSTREAM,   /* the upstream's EOF or error came first */
    ENDED_LOCAL,      /* a local decision (timeout, overflow, forced stop) came first */
};

struct conn {
    struct session *s;
    enum side side;
    int fd;
    struct transport_socket *ts;
    struct event *rev, *wev;
    struct event *kick; /* runs a read the fd will not announce (TLS pending); made on first use */
    struct evbuffer *out; /* bytes waiting to be written to this conn */
    uint32_t limit;
    bool connected;
    bool rev_on, wev_on;
    bool read_paused;                 /* backpressure: peer's output is full */
    bool read_blocked, write_blocked; /* a layer holds a direction back (capture backlog) */
    bool read_eof;                    /* peer of this socket ended its write half */
    bool write_shut;                  /* we ended our write half towards this socket */
    bool dead;                        /* fatal error seen: no more I/O */
};

struct session {
    struct worker *w;
    struct gen *g; /* the config generation it started under (a reference): all its config,
                      stats, counts and LB state come from there until it ends */
    uint64_t id;   /* LOG_NO_CONN until a filter chain is chosen (Envoy: no connection yet) */
    size_t li, ci, host;
    const struct cfg_filter_chain *fc; /* the chain chosen (in g), NULL before */
    bool opened;                       /* fc chosen, counted open on the listener */
    /* tls_inspector phase: peek_ev waits for the ClientHello, peek_timer is
     * listener_filters_timeout; both NULL outside it */
    struct event *peek_ev, *peek_timer;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    struct conn c[2];
    struct event *timer; /* connect timeout, then idle timeout */
    struct event *retry; /* retries directions a transport layer blocked; made on first use */
    struct event *max_duration; /* max_downstream_connection_duration, or NULL */
    uint64_t idle_ms;
    struct timeval last_activity;
    bool handshaking; /* downstream transport not ready yet: no upstream, timer = its timeout */
    bool connecting;
    bool backoff; /* waiting on timer before the next connect attempt */
    bool finished;
    bool connect_fail_logged; /* a connect failure of this session was logged at info */
    bool cluster_admitted;    /* holds a cluster slot and a host: cluster_release/_host_release */
    bool listener_admitted;   /* holds a connection_limit slot: listener_release */
    bool up_ever_connected;
    enum ended_first ended_first;
    uint32_t attempts;     /* upstream connect attempts made */
    uint32_t max_attempts; /* max_connect_attempts; lowered once the client ended its side */
    enum ts_close_type close_how[2];
    /* use_original_dst: the destination the client asked for before an iptables REDIRECT
     * (SO_ORIGINAL_DST), where an ORIGINAL_DST cluster connects (allocated then) */
    struct cfg_address *orig_dst;
    /* access_log (only when the tcp_proxy has one: struct session_log is allocated then) */
    struct session_log *log;
    struct timeval start_wall;  /* accepted at: the access log's %START_TIME% */
    struct timespec start_mono; /* and its %DURATION% */
    struct session *prev, *next;
    /* in the worker's list of sessions a layer holds back (session_arm_retry), or NULL */
    struct session *held_next, **held_pprev;
};

/* What an access log line shows that the relay does not keep anyway (access_format.h). */
struct session_log {
    struct timeval start_wall;
    struct timespec start_mono;
    uint64_t bytes_rx, bytes_tx; /* downstream */
    struct sockaddr_storage peer, local, up_local;
    socklen_t peer_len, local_len, up_local_len;
    unsigned flags;
    char up_failure[64];
};

static const char *const side_name[2] = {"downstream", "upstream"};

/* The upstream host the session uses: its ORIGINAL_DST destination, or the picked host. */
static const struct cfg_address *session_host_addr(const struct session *s)
{
    if (s->orig_dst && cluster_config(s->g, s->ci)->type == CFG_CLUSTER_ORIGINAL_DST)
        return s->orig_dst;
    return cluster_host_addr(s->g, s->ci, s->host);
}

static void conn_event_cb(evutil_socket_t fd, short what, void *arg);
static void session_timer_cb(evutil_socket_t fd, short what, void *arg);
static void upstream_downstream_ended(struct session *s);
static void session_begin_upstream(struct session *s);
static void inspect_stop(struct session *s);

static struct conn *peer_of(struct conn *c)
{
    return &c->s->c[c->side == DOWN ? UP : DOWN];
}

static const struct listener_stats *lstats(const struct session *s)
{
    return listener_stats(s->g, s->li);
}

static const struct chain_stats *tstats(const struct session *s)
{
    return &listener_stats(s->g, s->li)->chains[s->fc->index];
}

static const struct cluster_stats *cstats(const struct session *s)
{
    return cluster_stats(s->g, s->ci);
}

static void touch(struct session *s)
{
    event_base_gettimeofday_cached(s->w->base, &s->last_activity);
}

/* SIDE's EOF or error: it ended the session first unless something else already did. */
static void session_mark_ended(struct session *s, enum side side)
{
    if (s->ended_first == ENDED_NONE)
        s->ended_first = side == DOWN ? ENDED_DOWNSTREAM : ENDED_UPSTREAM;
}

/* Marks the session finished; session_settle() frees it at the end of the callback. */
static void session_finish(struct session *s, enum ts_close_type down, enum ts_close_type up)
{
    if (s->finished)
        return;
    s->finished = true;
    if (s->ended_first == ENDED_NONE)
        s->ended_first = ENDED_LOCAL;
    s->close_how[DOWN] = down;
    s->close_how[UP] = up;
}

static void conn_kick_read(struct conn *c);

static void conn_update_events(struct conn *c)
{
    if (c->dead || !c->ts)
        return;
    struct conn *p = peer_of(c);
    bool want_read = c->connected && !c->read_eof && !c->read_paused && !c->read_blocked;
    bool have_out = evbuffer_get_length(c->out) > 0 || (p->read_eof && !c->write_shut);
    bool want_write = (c->connected && have_out && ts_is_ready(c->ts) && !c->write_blocked) ||
                      ts_wants_write(c->ts) || (c->side == UP && c->s->connecting);
    /* Decrypted bytes no fd event will announce: a handshake that ended inside a call other
     * than a read (on_connected at accept, a write) with the peer's first bytes already pulled
     * into OpenSSL's buffer. Checked here, where every callback ends, rather than after each
     * call that might finish a handshake: the relay stalled until the client's FIN when one such
     * call site was missed (a loaded CI machine; test_tls: read with the handshake). The only
     * such check: after reads, writes and resumes alike, the callback settles here. */
    if (want_read && ts_has_pending(c->ts))
        conn_kick_read(c);
    if (want_read != c->rev_on) {
        if (want_read)
            event_add(c->rev, NULL);
        else
            event_del(c->rev);
        c->rev_on = want_read;
    }
    if (want_write != c->wev_on) {
        if (want_write)
            event_add(c->wev, NULL);
        else
            event_del(c->wev);
        c->wev_on = want_write;
    }
}

static void session_retry_cb(evutil_socket_t fd, short what, void *arg);

/* The fallback timer of a held session: RETRY_US, or SOCKTAP_HELD_RETRY_MS from the
 * environment (the tests make it long, so a held session that only the timer would resume
 * shows as a stall). */
static struct timeval retry_interval;

static void retry_interval_init(void)
{
    const char *env = getenv("SOCKTAP_HELD_RETRY_MS");
    unsigned long long ms = env && *env ? strtoull(env, NULL, 10) : 0;
    if (ms)
        retry_interval = (struct timeval){.tv_sec = (time_t)(ms / 1000),
                                          .tv_usec = (suseconds_t)(ms % 1000 * 1000)};
    else
        retry_interval = (struct timeval){.tv_sec = 0, .tv_usec = RETRY_US};
}

static void session_held_unlink(struct session *s)
{
    if (!s->held_pprev)
        return;
    *s->held_pprev = s->held_next;
    if (s->held_next)
        s->held_next->held_pprev = s->held_pprev;
    s->held_next = NULL;
    s->held_pprev = NULL;
}

/* A layer blocked a direction for its own reasons (no fd event will come): look again when the
 * layer's helper says there is room (session_resume_held), or on a short timer (a layer with
 * no such signal, or a global bound). */
static void session_arm_retry(struct session *s)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, retry_interval_init);
    if (!s->held_pprev) {
        s->held_next = s->w->held;
        if (s->held_next)
            s->held_next->held_pprev = &s->held_next;
        s->w->held = s;
        s->held_pprev = &s->w->held;
    }
    if (!s->retry)
        s->retry = evtimer_new(s->w->base, session_retry_cb, s);
    if (s->retry && !evtimer_pending(s->retry, NULL))
        evtimer_add(s->retry, &retry_interval);
}

static void conn_fail(struct conn *c, struct ts_io_result r, const char *op)
{
    struct session *s = c->s;
    const char *why = ts_failure_reason(c->ts);
    c->dead = true;
    session_mark_ended(s, c->side);
    if (r.err == -ECONNRESET) {
        LOGD(s->id, "%s reset by peer during %s", side_name[c->side], op);
        /* the peer sees what we saw: a reset */
        if (c->side == DOWN)
            session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_RESET);
        else
            session_finish(s, TS_CLOSE_RESET, TS_CLOSE_NORMAL);
    } else {
        LOGD(s->id, "%s %s failed: %s", side_name[c->side], op, why ? why : "error");
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
    }
}

static void account(struct conn *c, size_t bytes, bool rx)
{
    struct session *s = c->s;
    if (!bytes)
        return;
    if (c->side == DOWN) {
        stats_add(rx ? tstats(s)->tcp_rx_bytes : tstats(s)->tcp_tx_bytes, (int64_t)bytes);
        if (s->log)
            *(rx ? &s->log->bytes_rx : &s->log->bytes_tx) += bytes;
    } else {
        stats_add(rx ? cstats(s)->cx_rx_bytes : cstats(s)->cx_tx_bytes, (int64_t)bytes);
    }
    touch(s);
}

static void conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    conn_event_cb(c->fd, EV_READ, c);
}

/* Schedules a read of C from the loop. Not event_active(c->rev): libevent's event_add() skips
 * inserting an event that is active at that moment, so activating rev while it is not added
 * and then adding it (a resume) would leave it neither pending nor active once it ran: a
 * silent stall, seen as a TLS transfer that stopped with data waiting in the socket. */
static void conn_kick_read(struct conn *c)
{
    if (!c->kick)
        c->kick = event_new(c->s->w->base, -1, 0, conn_kick_cb, c);
    if (c->kick)
        event_active(c->kick, EV_READ, 0);
}

/* Writes C's pending output; after the last byte, ends C's write half if its peer has. */
static void conn_flush(struct conn *c)
{
    struct conn *p = peer_of(c);
    if (c->dead || !c->connected || c->write_shut || c->s->finished)
        return;
    size_t pending = evbuffer_get_length(c->out);
    bool end = p->read_eof;
    if (pending == 0 && !end && !ts_wants_write(c->ts))
        return;
    struct ts_io_result r = ts_do_write(c->ts, c->out, end);
    account(c, r.bytes, false);
    if (r.blocked) {
        c->write_blocked = true;
        session_arm_retry(c->s);
        return;
    }
    if (r.action == TS_CLOSE) {
        conn_fail(c, r, "write");
        return;
    }
    if (end && evbuffer_get_length(c->out) == 0 && ts_is_ready(c->ts)) {
        c->write_shut = true;
        LOGT(c->s->id, "%s write half closed", side_name[c->side]);
    }
    if (p->read_paused && evbuffer_get_length(c->out) < c->limit / 2) {
        p->read_paused = false; /* pending TLS bytes: conn_update_events kicks the read */
    }
}

/* Reads from C into its peer's output buffer, within the peer's limit. */
static void conn_read(struct conn *c)
{
    struct conn *p = peer_of(c);
    if (c->dead || c->read_eof || c->s->finished)
        return;
    size_t queued = evbuffer_get_length(p->out);
    if (queued >= p->limit) {
        c->read_paused = true;
        return;
    }
    size_t max = p->limit - queued;
    if (max < MIN_READ_CHUNK)
        max = MIN_READ_CHUNK;
    struct ts_io_result r = ts_do_read(c->ts, p->out, max);
    account(c, r.bytes, true);
    if (r.blocked) {
        c->read_blocked = true;
        session_arm_retry(c->s);
        return;
    }
    if (r.action == TS_CLOSE) {
        conn_fail(c, r, "read");
        return;
    }
    if (r.end_stream) {
        c->read_eof = true;
        session_mark_ended(c->s, c->side);
        LOGT(c->s->id, "%s read EOF", side_name[c->side]);
        if (c->side == DOWN && !p->connected)
            upstream_downstream_ended(c->s);
    }
    if (evbuffer_get_length(p->out) >= p->limit)
        c->read_paused = true;
}

/* Frees C's events, transport socket and fd, keeping its output buffer (a connect retry
 * keeps what the client already sent) and resetting its state for a new fd. */
static void conn_release(struct conn *c, enum ts_close_type how)
{
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->kick)
        event_free(c->kick);
    if (c->ts) {
        ts_close(c->ts, how);
        ts_destroy(c->ts);
    } else if (c->fd >= 0) {
        close(c->fd);
    }
    c->rev = c->wev = c->kick = NULL;
    c->ts = NULL;
    c->fd = -1;
    c->connected = c->rev_on = c->wev_on = c->dead = false;
    c->read_blocked = c->write_blocked = false;
}

/* Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON% has no spaces (its formatter turns them into
 * '_', source/common/formatter/stream_info_formatter.cc): the same for socktap's reasons. */
static void session_log_failure(struct session *s, const char *why)
{
    if (!s->log)
        return;
    snprintf(s->log->up_failure, sizeof(s->log->up_failure), "%s", why);
    for (char *p = s->log->up_failure; *p; p++)
        if (*p == ' ')
            *p = '_';
}

/* One line per access_log of the session's tcp_proxy, handed to the access log writer (its
 * write(2) never runs here). */
static void session_access_log(struct session *s)
{
    const struct cfg_tcp_proxy *tp = &s->fc->tcp_proxy;
    struct session_log *sl = s->log;
    struct al_info info = {0};
    struct timespec now;
    char line[AL_LINE_MAX];
    clock_gettime(CLOCK_MONOTONIC, &now);
    info.start = sl->start_wall;
    info.duration_ms = (uint64_t)(now.tv_sec - sl->start_mono.tv_sec) * 1000 +
                       (uint64_t)((now.tv_nsec - sl->start_mono.tv_nsec) / 1000000);
    info.bytes_received = sl->bytes_rx;
    info.bytes_sent = sl->bytes_tx;
    info.conn_id = s->id;
    info.down_remote = sl->peer;
    info.down_remote_len = sl->peer_len;
    info.down_local = sl->local;
    info.down_local_len = sl->local_len;
    info.up_local = sl->up_local;
    info.up_local_len = sl->up_local_len;
    if (s->cluster_admitted) {
        const struct cfg_address *h = session_host_addr(s);
        memcpy(&info.up_host, &h->ss, h->len);
        info.up_host_len = h->len;
    }
    info.cluster = cluster_config(s->g, s->ci)->name;
    info.up_failure = sl->up_failure[0] ? sl->up_failure : NULL;
    info.flags = sl->flags;
    if (!s->up_ever_connected && s->ended_first == ENDED_DOWNSTREAM &&
        !(sl->flags & (AL_FLAG_UF | AL_FLAG_UO)))
        info.flags |= AL_FLAG_DC; /* the client left before any upstream answered */
    for (size_t i = 0; i < tp->naccess_logs; i++) {
        size_t len = al_format_render(tp->access_logs[i].fmt, &info, line, sizeof(line));
        access_log_write(tp->access_logs[i].path, line, len);
    }
}

static void session_free(struct session *s)
{
    struct worker *w = s->w;
    inspect_stop(s); /* a forced stop during the peek: its events go before the fd */
    if (s->log) {
        session_access_log(s);
        free(s->log);
        s->log = NULL;
    }
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        conn_release(c, s->close_how[i]);
        if (c->out)
            evbuffer_free(c->out);
    }
    if (s->up_ever_connected) {
        stats_inc(cstats(s)->cx_destroy);
        stats_inc(s->ended_first == ENDED_UPSTREAM ? cstats(s)->cx_destroy_remote
                                                   : cstats(s)->cx_destroy_local);
    }
    if (s->listener_admitted)
        listener_release(s->g, s->li);
    if (s->timer)
        event_free(s->timer);
    session_held_unlink(s);
    if (s->retry)
        event_free(s->retry);
    if (s->max_duration)
        event_free(s->max_duration);
    if (s->opened)
        listener_conn_closed(s->g, s->li);
    if (s->cluster_admitted) {
        cluster_release(s->g, s->ci);
        cluster_host_release(w, s->g, s->ci, s->host);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
    LOGD(s->id, "closed");
    struct gen *g = s->g;
    free(s->orig_dst);
    free(s);
    /* last: its transport sockets (and their capture configs) are gone */
    if (gen_unref(g))
        server_gen_released(w->srv);
    if (w->draining && w->nsessions == 0)
        event_base_loopexit(w->base, NULL);
}

/* The one place that decides whether a session is over; called at the end of every callback.
 * Returns true if S was freed. */
static bool session_settle(struct session *s)
{
    if (!s->finished) {
        bool down_to_up_done = s->c[DOWN].read_eof && s->c[UP].write_shut;
        bool up_to_down_done = s->c[UP].read_eof && s->c[DOWN].write_shut;
        if (down_to_up_done && up_to_down_done)
            session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
    }
    if (s->finished) {
        session_free(s);
        return true;
    }
    conn_update_events(&s->c[DOWN]);
    conn_update_events(&s->c[UP]);
    return false;
}

static void session_arm_idle(struct session *s)
{
    if (!s->idle_ms) {
        event_del(s->timer);
        return;
    }
    struct timeval tv = {.tv_sec = (time_t)(s->idle_ms / 1000),
                         .tv_usec = (suseconds_t)(s->idle_ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

static void session_connect(struct session *s);

/* Logs that the connect attempt to the current host failed for WHY: at info (the reason is what
 * an operator needs) once per session and at most CONNECT_FAIL_LOG_PER_S lines a second per
 * worker, so a dead host under load does not flood the log; every other attempt at debug. */
static void upstream_log_failure(struct session *s, const char *why)
{
    static __thread time_t window;
    static __thread unsigned logged, not_logged;
    const char *host = session_host_addr(s)->text;
    struct timeval now;
    event_base_gettimeofday_cached(s->w->base, &now);
    if (!s->connect_fail_logged) {
        if (now.tv_sec != window) {
            window = now.tv_sec;
            logged = 0;
        }
        if (logged < CONNECT_FAIL_LOG_PER_S) {
            logged++;
            s->connect_fail_logged = true;
            if (not_logged)
                LOGI(s->id, "upstream connect to %s failed: %s (%u more since, at debug level)",
                     host, why, not_logged);
            else
                LOGI(s->id, "upstream connect to %s failed: %s", host, why);
            not_logged = 0;
            return;
        }
        not_logged++;
    }
    LOGD(s->id, "upstream connect to %s failed: %s", host, why);
}

/* No attempt left: counted as upstream_cx_connect_attempts_exceeded (as Envoy), session ends. */
static void upstream_give_up(struct session *s)
{
    stats_inc(cstats(s)->cx_connect_attempts_exceeded);
    /* Envoy's tcp_proxy: UF for the failed connect, URX once max_connect_attempts are spent
     * (source/common/tcp_proxy/tcp_proxy.cc), so a dead upstream logs "UF,URX" */
    if (s->log)
        s->log->flags |= AL_FLAG_UF | AL_FLAG_URX;
    LOGD(s->id, "no upstream connection after %u attempt(s)", s->attempts);
    conn_release(&s->c[UP], TS_CLOSE_NORMAL);
    s->c[UP].dead = true;
    session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
}

/* The current connect attempt failed with ERR (-errno; already counted and logged): schedules the
 * next attempt after a backoff if attempts remain, else ends the session. The failed socket is
 * released now: nothing may poll it meanwhile. */
static void upstream_attempt_failed(struct session *s, int err)
{
    s->connecting = false;
    conn_release(&s->c[UP], TS_CLOSE_NORMAL);
    if (err == -EMFILE || err == -ENFILE) {
        if (s->g == s->w->gen) /* else its listener index is not the worker's any more */
            listener_pause_accepts(s->w, s->li, -err); /* let the backlog wait for fds */
        upstream_give_up(s);
        return;
    }
    if (s->attempts >= s->max_attempts) {
        upstream_give_up(s);
        return;
    }
    uint32_t shift = s->attempts - 1 < 16 ? s->attempts - 1 : 16;
    uint32_t ms = CONNECT_BACKOFF_BASE_MS << shift;
    if (ms > CONNECT_BACKOFF_MAX_MS)
        ms = CONNECT_BACKOFF_MAX_MS;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    s->backoff = true;
    evtimer_add(s->timer, &tv);
}

/* The client ended its side (EOF) while no upstream connection exists: from now on each host
 * gets at most one more try (see the top of the file). */
static void upstream_downstream_ended(struct session *s)
{
    uint64_t n = cluster_config(s->g, s->ci)->nhosts;
    uint64_t limit = (uint64_t)s->attempts + (n ? n - 1 : 0);
    if (limit < s->max_attempts)
        s->max_attempts = (uint32_t)limit;
    if (s->backoff && s->attempts >= s->max_attempts) {
        s->backoff = false;
        event_del(s->timer);
        LOGD(s->id, "downstream ended its side: no more upstream connect attempts");
        upstream_give_up(s);
    }
}

static void upstream_connected(struct session *s)
{
    struct conn *u = &s->c[UP];
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr == EINPROGRESS || soerr == EALREADY)
        return;
    s->connecting = false;
    if (soerr) {
        stats_inc(cstats(s)->cx_connect_fail);
        upstream_log_failure(s, strerror(soerr));
        session_log_failure(s, strerror(soerr));
        upstream_attempt_failed(s, -soerr);
        return;
    }
    u->connected = true;
    s->up_ever_connected = true;
    if (s->log) {
        s->log->up_failure[0] = '\0'; /* an earlier attempt's reason is not this one's */
        s->log->up_local_len = sizeof(s->log->up_local);
        if (getsockname(u->fd, (struct sockaddr *)&s->log->up_local, &s->log->up_local_len) < 0)
            s->log->up_local_len = 0;
    }
    touch(s);
    session_arm_idle(s);
    int rc = ts_on_connected(u->ts);
    if (rc < 0) {
        LOGD(s->id, "upstream transport failed to start: %s", strerror(-rc));
        u->dead = true;
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
        return;
    }
    LOGD(s->id, "upstream connected to %s", session_host_addr(s)->text);
}

static void conn_event_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct session *s = c->s;
    if (c->side == UP && s->connecting && (what & EV_WRITE)) {
        upstream_connected(s);
        /* still connecting, failed (its conn released: backing off) or finished */
        if (s->finished || !c->connected) {
            session_settle(s);
            return;
        }
    }
    if (what & EV_READ)
        conn_read(c);
    /* a read may complete a TLS handshake (unblocking writes) or fill the peer's buffer */
    conn_flush(c);
    conn_flush(peer_of(c));
    if (s->handshaking && !s->finished && ts_is_ready(s->c[DOWN].ts))
        session_begin_upstream(s);
    session_settle(s);
}

static void session_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    session_held_unlink(s);
    for (int i = 0; i < 2; i++) {
        struct conn *c = &s->c[i];
        bool was_read_blocked = c->read_blocked;
        c->read_blocked = c->write_blocked = false;
        if (was_read_blocked && c->connected)
            conn_read(c);
    }
    conn_flush(&s->c[DOWN]);
    conn_flush(&s->c[UP]);
    session_settle(s);
}

/* max_downstream_connection_duration: the connection ends whatever it is doing (Envoy's
 * tcp_proxy onMaxDownstreamConnectionDuration: DT flag, tcp.X.max_downstream_connection_duration).
 */
static void session_max_duration_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    stats_inc(tstats(s)->tcp_max_duration);
    if (s->log)
        s->log->flags |= AL_FLAG_DT;
    LOGD(s->id, "max_downstream_connection_duration reached");
    session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
    session_settle(s);
}

static void session_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    if (s->backoff) {
        s->backoff = false;
        session_connect(s);
        session_settle(s);
        return;
    }
    if (s->handshaking) {
        stats_inc(lstats(s)->cx_ts_connect_timeout);
        LOGD(s->id,
             "downstream transport handshake not done within transport_socket_connect_timeout");
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
        session_settle(s);
        return;
    }
    if (s->connecting) {
        stats_inc(cstats(s)->cx_connect_timeout);
        upstream_log_failure(s, "connect timeout");
        session_log_failure(s, "connect timeout");
        upstream_attempt_failed(s, -ETIMEDOUT);
        session_settle(s);
        return;
    }
    struct timeval now, idle;
    event_base_gettimeofday_cached(s->w->base, &now);
    timersub(&now, &s->last_activity, &idle);
    uint64_t idle_ms = (uint64_t)idle.tv_sec * 1000 + (uint64_t)idle.tv_usec / 1000;
    if (idle_ms + 1 >= s->idle_ms) {
        stats_inc(tstats(s)->tcp_idle_timeout);
        if (s->log)
            s->log->flags |= AL_FLAG_SI;
        LOGD(s->id, "idle timeout");
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
        session_settle(s);
        return;
    }
    /* activity since arming: sleep for the rest only (no timer re-arm on the hot path) */
    uint64_t rest = s->idle_ms - idle_ms;
    struct timeval tv = {.tv_sec = (time_t)(rest / 1000),
                         .tv_usec = (suseconds_t)(rest % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

static int conn_setup(struct session *s, enum side side, int fd, uint32_t limit)
{
    struct conn *c = &s->c[side];
    c->s = s;
    c->side = side;
    c->fd = fd;
    c->limit = limit ? limit : CFG_DEFAULT_BUFFER_LIMIT;
    if (!c->out)
        c->out = evbuffer_new();
    c->rev = event_new(s->w->base, fd, EV_READ | EV_PERSIST, conn_event_cb, c);
    c->wev = event_new(s->w->base, fd, EV_WRITE | EV_PERSIST, conn_event_cb, c);
    if (!c->out || !c->rev || !c->wev)
        return -ENOMEM;
    return 0;
}

/* Same IP address and port (the listener's address may be a wildcard: then only the port). */
static bool sockaddr_same(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && (x->sin_addr.s_addr == y->sin_addr.s_addr ||
                                              y->sin_addr.s_addr == htonl(INADDR_ANY));
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           (!memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) ||
            IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
}

static void fill_info(struct ts_conn_info *info, struct session *s, int fd)
{
    memset(info, 0, sizeof(*info));
    info->conn_id = s->id;
    info->fd = fd;
    /* local stays empty: only capture needs it and asks the kernel itself, once connected;
     * two getsockname calls per connection are not worth it for everyone else */
    info->loop = s->w->base;
}

/* The client's original destination on use_original_dst listeners (Envoy's original_dst
 * listener filter, source/extensions/filters/listener/original_dst/original_dst.cc): the
 * address an iptables REDIRECT replaced, or the local address when none did. */
static int downstream_original_dst(struct session *s, int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    s->orig_dst = calloc(1, sizeof(*s->orig_dst));
    if (!s->orig_dst)
        return -ENOMEM;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    socklen_t olen = sizeof(ss);
    if (ss.ss_family == AF_INET)
        (void)getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &olen);
    else if (ss.ss_family == AF_INET6)
        (void)getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &olen);
    /* a failed getsockopt (no REDIRECT) leaves the local address, as Envoy's filter does */
    memcpy(&s->orig_dst->ss, &ss, sizeof(ss));
    s->orig_dst->len =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    sockaddr_text((const struct sockaddr *)&ss, s->orig_dst->len, ':', s->orig_dst->text,
                  sizeof(s->orig_dst->text));
    return 0;
}

static int upstream_start(struct session *s)
{
    const struct cfg_cluster *cl = cluster_config(s->g, s->ci);
    const struct cfg_address *host = session_host_addr(s);
    if (cl->type == CFG_CLUSTER_ORIGINAL_DST &&
        sockaddr_same(&host->ss, &listener_config(s->g, s->li)->addr.ss))
        return -ELOOP; /* no REDIRECT: the original destination is this listener */
    int fd = socket(host->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&host->ss, host->len) < 0 && errno != EINPROGRESS) {
        int err = errno;
        close(fd);
        return -err;
    }
    int rc = conn_setup(s, UP, fd, cl->buffer_limit);
    if (rc < 0)
        return rc; /* fd now in the conn: conn_release or session_free closes it */
    struct ts_conn_info info;
    fill_info(&info, s, fd);
    /* Its own id, as Envoy gives every connection (and every connect attempt) one from the
     * process-wide counter: an upstream trace is <prefix>_<its id>, never the downstream's. */
    info.conn_id = conn_id_next();
    info.connecting = true;
    LOGD(s->id, "upstream connection C%" PRIu64 " to %s", info.conn_id, session_host_addr(s)->text);
    memcpy(&info.remote, &host->ss, host->len);
    info.remote_len = host->len;
    rc = ts_config_create(&cl->ts, &info, &s->c[UP].ts);
    if (rc < 0)
        return rc; /* fd still ours: session_free closes it */
    s->connecting = true;
    /* from fresh time, not the loop's cached time: a callback that set up many connections
     * (trace files opened, TLS contexts made) may have run for a while since the cache was
     * taken, and a timer armed from a stale "now" expires that much early */
    event_base_update_cache_time(s->w->base);
    struct timeval tv = {.tv_sec = (time_t)(cl->connect_timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(cl->connect_timeout_ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
    return 0;
}

/* Makes the next upstream connect attempt: another host than the last one when there is one.
 * On failure, upstream_attempt_failed() schedules the next attempt or ends the session. */
static void session_connect(struct session *s)
{
    struct worker *w = s->w;
    if (s->attempts > 0) {
        conn_release(&s->c[UP], TS_CLOSE_NORMAL);
        s->host = cluster_repick_host(w, s->g, s->ci, s->host);
        LOGD(s->id, "trying host %s (attempt %u of %u)", session_host_addr(s)->text,
             s->attempts + 1, s->max_attempts);
    }
    s->attempts++;
    stats_inc(cstats(s)->cx_total);
    int rc = upstream_start(s);
    if (rc == 0)
        return;
    const char *why =
        rc == -ELOOP ? "original destination is this listener (no REDIRECT)" : strerror(-rc);
    stats_inc(cstats(s)->cx_connect_fail);
    upstream_log_failure(s, why);
    session_log_failure(s, why);
    upstream_attempt_failed(s, rc);
}

/* The downstream transport is ready (at once for raw, after the handshake for TLS): takes a
 * cluster slot and starts the first upstream connect attempt. */
static void session_begin_upstream(struct session *s)
{
    s->handshaking = false;
    event_del(s->timer);
    if (cluster_admit(s->g, s->ci, s->id) < 0) {
        if (s->log)
            s->log->flags |= AL_FLAG_UO;
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
        return;
    }
    s->host = cluster_pick_host(s->w, s->g, s->ci);
    s->cluster_admitted = true;
    session_connect(s);
}

/* Allocates a session for FD, accepted on W's listener LI, and links it into W's list; the
 * session owns FD from then on. Its filter chain is chosen later (session_bind_chain). Returns
 * NULL when out of memory. */
static struct session *session_new(struct worker *w, size_t li, int fd)
{
    struct gen *g = w->gen;
    struct session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    gettimeofday(&s->start_wall, NULL); /* the access log's %START_TIME%, %DURATION% */
    clock_gettime(CLOCK_MONOTONIC, &s->start_mono);
    s->w = w;
    s->g = g;
    gen_ref(g);
    s->id = LOG_NO_CONN;
    s->li = li;
    s->ended_first = ENDED_NONE;
    s->c[DOWN].fd = fd;
    s->c[UP].fd = -1;
    /* the upstream conn exists before any attempt succeeds: a client's bytes and EOF are read
     * into it while attempts fail and back off */
    s->c[UP].s = s;
    s->c[UP].side = UP;
    s->c[UP].out = evbuffer_new();
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
    touch(s);
    return s;
}

/* S runs filter chain FC from now on: its tcp_proxy, cluster and transport socket. Envoy
 * creates the connection (and its id) only here, after the listener filters. */
static int session_bind_chain(struct session *s, const struct cfg_filter_chain *fc)
{
    size_t ci = cluster_route(s->w, s->g, &fc->tcp_proxy);
    const struct cfg_cluster *cl = cluster_config(s->g, ci);
    s->fc = fc;
    s->ci = ci;
    s->id = conn_id_next();
    s->idle_ms = fc->tcp_proxy.idle_timeout_ms;
    s->max_attempts = fc->tcp_proxy.max_connect_attempts ? fc->tcp_proxy.max_connect_attempts : 1;
    s->c[UP].limit = cl->buffer_limit ? cl->buffer_limit : CFG_DEFAULT_BUFFER_LIMIT;
    listener_conn_opened(s->g, s->li, fc->index);
    s->opened = true;
    if (fc->tcp_proxy.naccess_logs) {
        if (!(s->log = calloc(1, sizeof(*s->log))))
            return -ENOMEM;
        s->log->start_wall = s->start_wall;
        s->log->start_mono = s->start_mono;
    }
    uint64_t max_ms = fc->tcp_proxy.max_duration_ms;
    if (max_ms) {
        struct timeval tv = {.tv_sec = (time_t)(max_ms / 1000),
                             .tv_usec = (suseconds_t)(max_ms % 1000) * 1000};
        if (!(s->max_duration = evtimer_new(s->w->base, session_max_duration_cb, s)))
            return -ENOMEM;
        evtimer_add(s->max_duration, &tv);
    }
    return 0;
}

/* Makes the downstream conn and its transport socket stack for the client at PEER and starts
 * it (a TLS handshake begins). Returns 0 or -errno (the session must finish). */
static int downstream_start(struct session *s, const struct sockaddr *peer, int peer_len)
{
    const struct cfg_listener *l = listener_config(s->g, s->li);
    int fd = s->c[DOWN].fd;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->timer = evtimer_new(s->w->base, session_timer_cb, s);
    int rc = s->timer && s->c[UP].out ? conn_setup(s, DOWN, fd, l->buffer_limit) : -ENOMEM;
    if (rc < 0)
        return rc;

    struct ts_conn_info info;
    fill_info(&info, s, fd);
    if (peer_len > 0 && (size_t)peer_len <= sizeof(info.remote)) {
        memcpy(&info.remote, peer, (size_t)peer_len);
        info.remote_len = (socklen_t)peer_len;
        if (s->log) {
            memcpy(&s->log->peer, peer, (size_t)peer_len);
            s->log->peer_len = (socklen_t)peer_len;
        }
    }
    if (s->log) {
        s->log->local_len = sizeof(s->log->local);
        if (getsockname(fd, (struct sockaddr *)&s->log->local, &s->log->local_len) < 0)
            s->log->local_len = 0;
    }
    rc = ts_config_create(&s->fc->ts, &info, &s->c[DOWN].ts);
    if (rc < 0) {
        LOGW(s->id, "downstream transport socket failed: %s", strerror(-rc));
        return rc;
    }
    s->c[DOWN].connected = true;
    char peer_text[INET6_ADDRSTRLEN];
    if (sockaddr_ip_port(peer, (socklen_t)peer_len, peer_text, sizeof(peer_text), NULL) != 0)
        snprintf(peer_text, sizeof(peer_text), "?");
    LOGD(s->id, "new connection from %s on %s", peer_text, l->addr.text);
    return ts_on_connected(s->c[DOWN].ts);
}

/* The downstream transport is not ready (a TLS handshake): Envoy's order is to connect the
 * upstream only once it is, so a client that never finishes its handshake costs no upstream
 * connection; it gets transport_socket_connect_timeout for it (conn_event_cb goes on). */
static void downstream_await_ready(struct session *s)
{
    const struct cfg_filter_chain *fc = s->fc;
    s->handshaking = true;
    if (fc->transport_connect_timeout_ms) {
        struct timeval tv = {.tv_sec = (time_t)(fc->transport_connect_timeout_ms / 1000),
                             .tv_usec =
                                 (suseconds_t)(fc->transport_connect_timeout_ms % 1000) * 1000};
        event_base_update_cache_time(s->w->base); /* see upstream_start */
        evtimer_add(s->timer, &tv);
    }
}

/* Logs the first occurrence of a listener event in this generation (atomic: any worker). */
static bool first_time(int *flag)
{
    return __atomic_exchange_n(flag, 1, __ATOMIC_RELAXED) == 0;
}

/* The chain is known (HELLO: the inspector's findings, NULL without one): binds it, then the
 * connection starts as every connection does. */
static void session_start(struct session *s, const struct tls_hello *hello)
{
    const struct cfg_listener *l = listener_config(s->g, s->li);
    struct listener_stats *ls = (struct listener_stats *)lstats(s);
    struct sockaddr_storage local;
    socklen_t local_len = sizeof(local);
    const char *alpn[TLS_HELLO_MAX_ALPN];
    struct cfg_chain_conn cc = {.peer = (const struct sockaddr *)&s->peer,
                                .local = (const struct sockaddr *)&local,
                                .server_name = "",
                                .transport_protocol = "raw_buffer"};
    if (getsockname(s->c[DOWN].fd, (struct sockaddr *)&local, &local_len) < 0)
        local.ss_family = AF_UNSPEC;
    if (hello && hello->state == TLS_HELLO_DONE) {
        cc.server_name = hello->sni;
        cc.transport_protocol = "tls";
        for (size_t i = 0; i < hello->nalpn; i++)
            alpn[i] = hello->alpn[i];
        cc.alpn = alpn;
        cc.nalpn = hello->nalpn;
    }
    const struct cfg_filter_chain *fc = cfg_chain_select(l, &cc);
    if (!fc) {
        stats_inc(ls->no_chain_match);
        if (first_time(&ls->no_match_logged))
            LOGW(LOG_NO_CONN,
                 "listener %s: a connection matched no filter chain and there is no "
                 "default_filter_chain: closed (counted in listener.%s.no_filter_chain_match; "
                 "logged once)",
                 l->name, l->addr.stat_name);
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
        return;
    }
    if (session_bind_chain(s, fc) < 0)
        goto err_finish;
    /* Envoy's connection_limit filter: checked before any transport work (no TLS handshake,
     * no trace file for a connection we refuse). */
    if (listener_admit(s->g, s->li, s->id) < 0)
        goto err_finish;
    s->listener_admitted = true;
    if (downstream_start(s, (const struct sockaddr *)&s->peer, (int)s->peer_len) < 0)
        goto err_finish;
    if (ts_is_ready(s->c[DOWN].ts))
        session_begin_upstream(s); /* cluster admit, then connect */
    else
        downstream_await_ready(s);
    return;

err_finish:
    session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
}

/* Ends S's tls_inspector phase (its events, the pre-connection gauge, the socket's low-water
 * mark). Idempotent. */
static void inspect_stop(struct session *s)
{
    if (!s->peek_ev)
        return;
    event_free(s->peek_ev);
    s->peek_ev = NULL;
    if (s->peek_timer)
        event_free(s->peek_timer);
    s->peek_timer = NULL;
    stats_add(lstats(s)->pre_cx_active, -1);
    inspect_done(s->c[DOWN].fd);
}

static void inspect_count(struct session *s, const struct tls_hello *h)
{
    const struct listener_stats *ls = lstats(s);
    if (h->state != TLS_HELLO_DONE) {
        stats_inc(ls->ti_tls_not_found);
        return;
    }
    stats_inc(ls->ti_tls_found);
    stats_inc(h->sni[0] ? ls->ti_sni_found : ls->ti_sni_not_found);
    stats_inc(h->has_alpn ? ls->ti_alpn_found : ls->ti_alpn_not_found);
}

static void inspect_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    const struct cfg_listener *l = listener_config(s->g, s->li);
    struct tls_hello hello;
    int rc = inspect_peek((int)fd, l->max_client_hello_size, &hello);
    (void)what;
    if (rc == 0)
        return; /* woken again once SO_RCVLOWAT bytes are there */
    inspect_stop(s);
    if (rc == 1) {
        inspect_count(s, &hello);
        session_start(s, &hello);
    } else if (rc == -EMSGSIZE) {
        /* Envoy closes the socket too (tls_inspector.cc: client_hello_too_large) */
        stats_inc(lstats(s)->ti_too_large);
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
    } else {
        stats_inc(lstats(s)->lf_remote_close);
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
    }
    session_settle(s);
}

static void inspect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    const struct cfg_listener *l = listener_config(s->g, s->li);
    struct listener_stats *ls = (struct listener_stats *)lstats(s);
    (void)fd, (void)what;
    inspect_stop(s);
    stats_inc(ls->pre_cx_timeout);
    if (first_time(&ls->timeout_logged))
        LOGW(LOG_NO_CONN,
             "listener %s: a client sent no whole ClientHello within listener_filters_timeout: "
             "%s (counted in listener.%s.downstream_pre_cx_timeout; logged once)",
             l->name,
             l->continue_on_listener_filters_timeout ? "continued without SNI/ALPN" : "closed",
             l->addr.stat_name);
    if (l->continue_on_listener_filters_timeout)
        session_start(s, NULL);
    else
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
    session_settle(s);
}

/* Starts the tls_inspector phase: the chain is chosen once the ClientHello is there. */
static int inspect_start(struct session *s)
{
    const struct cfg_listener *l = listener_config(s->g, s->li);
    int fd = s->c[DOWN].fd;
    s->peek_ev = event_new(s->w->base, fd, EV_READ | EV_PERSIST, inspect_read_cb, s);
    if (!s->peek_ev)
        return -ENOMEM;
    stats_add(lstats(s)->pre_cx_active, 1);
    if (l->listener_filters_timeout_ms) {
        struct timeval tv = {.tv_sec = (time_t)(l->listener_filters_timeout_ms / 1000),
                             .tv_usec =
                                 (suseconds_t)(l->listener_filters_timeout_ms % 1000) * 1000};
        s->peek_timer = evtimer_new(s->w->base, inspect_timeout_cb, s);
        if (!s->peek_timer)
            return -ENOMEM;
        event_base_update_cache_time(s->w->base); /* see upstream_start */
        evtimer_add(s->peek_timer, &tv);
    }
    /* the first wakeup comes with the first byte: a plain-text client is told from TLS by it */
    return event_add(s->peek_ev, NULL) < 0 ? -ENOMEM : 0;
}

void session_accept(struct worker *w, size_t li, int fd, const struct sockaddr *peer, int peer_len)
{
    struct session *s = session_new(w, li, fd);
    if (!s) {
        close(fd);
        return;
    }
    if (peer_len > 0 && (size_t)peer_len <= sizeof(s->peer)) {
        memcpy(&s->peer, peer, (size_t)peer_len);
        s->peer_len = (socklen_t)peer_len;
    }
    /* use_original_dst first: the chain choice matches the original destination */
    if (listener_config(s->g, li)->use_original_dst && downstream_original_dst(s, fd) < 0) {
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
        session_settle(s);
        return;
    }
    if (listener_config(s->g, li)->tls_inspector) {
        if (inspect_start(s) < 0)
            session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
    } else {
        session_start(s, NULL);
    }
    session_settle(s);
}

void session_resume_held(struct worker *w)
{
    /* taken as a whole first: a session retried here that is still held goes back on w->held,
     * to wait for the next signal */
    struct session *list = w->held;
    w->held = NULL;
    if (list)
        list->held_pprev = &list;
    while (list) {
        struct session *s = list;
        session_held_unlink(s);
        if (s->retry)
            event_del(s->retry);
        session_retry_cb(-1, 0, s);
    }
}

void session_close_all(struct worker *w)
{
    while (w->sessions) {
        struct session *s = w->sessions;
        session_finish(s, TS_CLOSE_NORMAL, TS_CLOSE_NORMAL);
        session_free(s);
    }
}
