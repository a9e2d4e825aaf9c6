/* live_hub.c: see live_hub.h. Rejected: one shared ring for all viewers (a slow viewer
 * would make every viewer lose, and each viewer needs its own loss accounting anyway); letting
 * the worker write to the viewer's socket (a worker must never block on, or buffer for, an
 * admin client). */
#include "transport/live_hub.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Gap records a viewer may hold beyond its byte bound (about 100 bytes each). */
#define LIVE_MAX_GAPS 65536

struct live_sub {
    struct live_hub *hub;
    struct live_sub *next; /* on hub->subs */
    struct live_ev *head, *tail;
    size_t bytes, max_bytes;
    size_t gaps;
    uint64_t lost;
    uint64_t dropped_events, dropped_bytes; /* since the last take: gap records, lost events */
    int efd;
};

struct live_hub {
    pthread_mutex_t lock;
    struct live_sub *subs;
    int nsubs; /* atomic: read without the lock by live_hub_wanted */
};

int live_hub_new(struct live_hub **out)
{
    struct live_hub *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    pthread_mutex_init(&h->lock, NULL);
    *out = h;
    return 0;
}

void live_hub_free(struct live_hub *h)
{
    if (!h)
        return;
    pthread_mutex_destroy(&h->lock);
    free(h);
}

bool live_hub_wanted(const struct live_hub *h)
{
    return h && __atomic_load_n(&h->nsubs, __ATOMIC_RELAXED) > 0;
}

static struct live_ev *live_ev_new(const struct trace_conn *conn, const struct trace_event *ev,
                                   bool gap)
{
    size_t n = gap ? 0 : ev->len;
    struct live_ev *e = malloc(sizeof(*e) + n);
    if (!e)
        return NULL;
    e->next = NULL;
    e->conn = *conn;
    e->sec = ev->sec;
    e->nsec = ev->nsec;
    e->dir = ev->dir;
    e->end_stream = ev->end_stream;
    e->gap = gap;
    e->len = ev->len;
    size_t off = 0;
    for (int i = 0; i < ev->iovcnt && off < n; i++) {
        size_t k = ev->iov[i].iov_len < n - off ? ev->iov[i].iov_len : n - off;
        memcpy(e->data + off, ev->iov[i].iov_base, k);
        off += k;
    }
    return e;
}

static void live_queue(struct live_sub *s, const struct trace_conn *conn,
                       const struct trace_event *ev, bool force_gap)
{
    bool gap = force_gap || (s->bytes + ev->len > s->max_bytes && ev->len > 0);
    if (gap && !force_gap) {
        s->dropped_events++;
        s->dropped_bytes += ev->len;
    }
    if (gap && s->gaps >= LIVE_MAX_GAPS) {
        s->lost++;
        return;
    }
    struct live_ev *e = live_ev_new(conn, ev, gap);
    if (!e) {
        s->lost++;
        if (!gap) {
            s->dropped_events++;
            s->dropped_bytes += ev->len;
        }
        return;
    }
    bool was_empty = !s->head;
    if (s->tail)
        s->tail->next = e;
    else
        s->head = e;
    s->tail = e;
    if (gap)
        s->gaps++;
    else
        s->bytes += ev->len;
    if (was_empty) {
        uint64_t one = 1;
        ssize_t w = write(s->efd, &one, sizeof(one)); /* fails only when the counter is full */
        (void)w;
    }
}

void live_hub_publish(struct live_hub *h, const struct trace_conn *conn,
                      const struct trace_event *ev)
{
    pthread_mutex_lock(&h->lock);
    for (struct live_sub *s = h->subs; s; s = s->next)
        live_queue(s, conn, ev, false);
    pthread_mutex_unlock(&h->lock);
}

void live_hub_publish_end(struct live_hub *h, const struct trace_conn *conn, bool stopped)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct trace_event ev = {.sec = ts.tv_sec, .nsec = (int32_t)ts.tv_nsec, .dir = TRACE_EV_CLOSED};
    pthread_mutex_lock(&h->lock);
    for (struct live_sub *s = h->subs; s; s = s->next)
        live_queue(s, conn, &ev, stopped);
    pthread_mutex_unlock(&h->lock);
}

int live_hub_subscribe(struct live_hub *h, size_t max_bytes, struct live_sub **out)
{
    struct live_sub *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        int rc = -errno;
        free(s);
        return rc;
    }
    s->hub = h;
    s->max_bytes = max_bytes;
    pthread_mutex_lock(&h->lock);
    s->next = h->subs;
    h->subs = s;
    __atomic_add_fetch(&h->nsubs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&h->lock);
    *out = s;
    return 0;
}

int live_sub_fd(const struct live_sub *s)
{
    return s->efd;
}

struct live_ev *live_hub_take(struct live_sub *s, uint64_t *lost)
{
    uint64_t v;
    ssize_t r = read(s->efd, &v, sizeof(v)); /* EAGAIN when nothing was signalled: fine */
    (void)r;
    pthread_mutex_lock(&s->hub->lock);
    struct live_ev *list = s->head;
    s->head = s->tail = NULL;
    s->bytes = 0;
    s->gaps = 0;
    *lost = s->lost;
    s->lost = 0;
    pthread_mutex_unlock(&s->hub->lock);
    return list;
}

void live_hub_take_dropped(struct live_sub *s, uint64_t *events, uint64_t *bytes)
{
    pthread_mutex_lock(&s->hub->lock);
    *events = s->dropped_events;
    *bytes = s->dropped_bytes;
    s->dropped_events = s->dropped_bytes = 0;
    pthread_mutex_unlock(&s->hub->lock);
}

void live_ev_event(const struct live_ev *e, struct iovec *iov, struct trace_event *out)
{
    bool body = e->len && !e->gap;
    *iov = (struct iovec){.iov_base = (void *)e->data, .iov_len = body ? e->len : 0};
    *out = (struct trace_event){.sec = e->sec,
                                .nsec = e->nsec,
                                .dir = e->dir,
                                .iov = body ? iov : NULL,
                                .iovcnt = body ? 1 : 0,
                                .len = e->len,
                                .end_stream = e->end_stream};
}

void live_hub_unsubscribe(struct live_sub *s)
{
    if (!s)
        return;
    struct live_hub *h = s->hub;
    pthread_mutex_lock(&h->lock);
    for (struct live_sub **pp = &h->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    __atomic_sub_fetch(&h->nsubs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&h->lock);
    for (struct live_ev *e = s->head, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    close(s->efd);
    free(s);
}
