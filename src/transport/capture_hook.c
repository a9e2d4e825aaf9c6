/* capture_hook.c: the on_finished runner (contract in capture_hook.h).
 *
 * A dedicated thread rather than the main thread's event loop: the writer finishes files, and
 * handing a job to main would need a queue and a wake-up anyway, while main's loop (admin,
 * signals, drain) is not where a fork-heavy hook load should show; the thread sleeps in poll(2)
 * and costs nothing while no hook runs. Children are waited for with pidfds (one per child,
 * readable when it exits), so no SIGCHLD handler is needed and no waitpid(-1) can reap a child
 * that is not a hook's. posix_spawn (vfork-like clone in glibc) keeps the spawn cheap in a
 * process with a large heap. Rejected: system(3)/a shell (quoting of the path; the config says
 * argv), a timer per hook (poll's timeout is the nearest deadline). */
#include "transport/capture_hook.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

extern char **environ;

/* A queued or running hook. It owns copies of everything it uses (argv, stats ids, kind, path),
 * in one allocation: a config reload frees the capture config that asked for it while hooks may
 * still wait here for minutes (net/gen.c). */
struct hook_job {
    struct hook_job *next;
    char **argv; /* NULL-terminated, into mem */
    struct capture_finish_stats st;
    const char *kind; /* into mem */
    uint64_t conn_id;
    char *path;  /* into mem */
    char *mem[]; /* argv's pointers, then the strings */
};

struct hook_child {
    pid_t pid;
    int pidfd;            /* -1: pidfd_open failed, polled with WNOHANG */
    uint64_t deadline_ms; /* CLOCK_MONOTONIC */
    int signals;          /* 0 none sent, 1 SIGTERM, 2 SIGKILL */
    struct hook_job *job;
};

static struct {
    pthread_mutex_t lock;
    struct hook_job *head, *tail;
    size_t queued; /* under lock */
    int wake_fd;
    bool started, stop;
    pthread_t thread;
    bool skipping; /* caller (writer) thread only: a skip was logged */
} g_hook = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake_fd = -1};

static uint64_t hook_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void hook_wake(void)
{
    uint64_t one = 1;
    if (write(g_hook.wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        LOGE(LOG_NO_CONN, "capture: cannot wake the on_finished thread: %s", strerror(errno));
}

/* Hook thread only: a failure (exit status, timeout, spawn error) was logged and no hook has
 * succeeded since. */
static bool t_failing;

static void hook_failed(const struct hook_job *job, const char *what)
{
    if (!t_failing)
        LOGW(job->conn_id,
             "%s: on_finished %s for %s: %s (until a hook succeeds again, further failures are "
             "only counted in %s.hook_failed and %s.hook_timeout)",
             job->kind, job->argv[0], job->path, what, job->kind, job->kind);
    t_failing = true;
}

/* Starts JOB into C. Returns 0 or -errno (nothing started; C untouched). */
static int hook_spawn(struct hook_job *job, struct hook_child *c, uint64_t timeout_ms)
{
    size_t argc = 0;
    while (job->argv[argc])
        argc++;
    char **argv = calloc(argc + 2, sizeof(*argv));
    if (!argv)
        return -ENOMEM;
    memcpy(argv, job->argv, argc * sizeof(*argv));
    argv[argc] = job->path;

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    pid_t pid;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        goto out_free_argv;
    if ((rc = posix_spawnattr_init(&attr)))
        goto out_destroy_fa;
    sigemptyset(&none);
    sigfillset(&all);
    /* stdin/stdout on /dev/null, stderr socktap's; every other descriptor closed, so a hook
     * never holds a listener, a trace or a client socket open (and cannot write to them) */
    if ((rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) ||
        (rc = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0)) ||
        (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) ||
        (rc = posix_spawnattr_setsigmask(&attr, &none)) ||
        (rc = posix_spawnattr_setsigdefault(&attr, &all)) ||
        (rc = posix_spawnattr_setpgroup(&attr, 0)) ||
        (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                  POSIX_SPAWN_SETPGROUP)))
        goto out_destroy_attr;
    if (strchr(argv[0], '/'))
        rc = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
    else
        rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
    if (rc)
        goto out_destroy_attr;
    *c = (struct hook_child){.pid = pid,
                             .pidfd = pidfd_open(pid, 0),
                             .deadline_ms = hook_now_ms() + timeout_ms,
                             .job = job};

out_destroy_attr:
    posix_spawnattr_destroy(&attr);
out_destroy_fa:
    posix_spawn_file_actions_destroy(&fa);
out_free_argv:
    free(argv);
    return -rc;
}

/* C's process ended with STATUS: counted, logged on a state change, C freed. */
static void hook_reaped(struct hook_child *c, int status)
{
    struct hook_job *job = c->job;
    char what[96];
    if (c->signals) {
        capture_finish_count(&job->st, job->st.hook_timeout);
        snprintf(what, sizeof(what), "still running after its timeout, killed");
        hook_failed(job, what);
    } else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        capture_finish_count(&job->st, job->st.hook_ok);
        if (t_failing)
            LOGI(job->conn_id, "%s: on_finished hooks succeed again", job->kind);
        t_failing = false;
    } else {
        capture_finish_count(&job->st, job->st.hook_failed);
        if (WIFEXITED(status))
            snprintf(what, sizeof(what), "exit status %d", WEXITSTATUS(status));
        else
            snprintf(what, sizeof(what), "killed by signal %d",
                     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        hook_failed(job, what);
    }
    if (c->pidfd >= 0)
        close(c->pidfd);
    free(job);
}

static void hook_signal(struct hook_child *c, uint64_t now)
{
    int sig = c->signals == 0 ? SIGTERM : SIGKILL;
    /* the whole group: a script's own children (sleep, curl) must not outlive it; the group
     * cannot be another one's while its leader is unreaped */
    kill(-c->pid, sig);
    kill(c->pid, sig); /* in case the hook left its group */
    c->signals++;
    c->deadline_ms = c->signals == 1 ? now + CAPTURE_HOOK_KILL_MS : UINT64_MAX;
}

static void *hook_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "socktap-hooks");
    log_set_thread_worker(-1);
    const char *env = getenv("SOCKTAP_HOOK_TIMEOUT_MS");
    uint64_t timeout_ms = env && *env ? strtoull(env, NULL, 10) : CAPTURE_HOOK_TIMEOUT_MS;
    if (!timeout_ms)
        timeout_ms = CAPTURE_HOOK_TIMEOUT_MS;
    struct hook_child run[CAPTURE_HOOK_MAX_RUNNING];
    size_t nrun = 0;
    bool stopping = false;

    for (;;) {
        pthread_mutex_lock(&g_hook.lock);
        if (g_hook.stop && !stopping) {
            stopping = true;
            size_t skipped = 0;
            char kind[16] = ""; /* the jobs own theirs: kept past their free for the log */
            while (g_hook.head) {
                struct hook_job *job = g_hook.head;
                g_hook.head = job->next;
                capture_finish_count(&job->st, job->st.hook_skipped);
                snprintf(kind, sizeof(kind), "%s", job->kind);
                skipped++;
                free(job);
            }
            g_hook.tail = NULL;
            g_hook.queued = 0;
            if (skipped)
                LOGW(LOG_NO_CONN,
                     "%s: shutting down: %zu queued on_finished hook(s) skipped (counted in "
                     "hook_skipped)",
                     kind, skipped);
            uint64_t end = hook_now_ms() + CAPTURE_HOOK_SHUTDOWN_MS;
            for (size_t i = 0; i < nrun; i++)
                if (!run[i].signals && run[i].deadline_ms > end)
                    run[i].deadline_ms = end;
        }
        while (!stopping && g_hook.head && nrun < CAPTURE_HOOK_MAX_RUNNING) {
            struct hook_job *job = g_hook.head;
            g_hook.head = job->next;
            if (!g_hook.head)
                g_hook.tail = NULL;
            g_hook.queued--;
            pthread_mutex_unlock(&g_hook.lock);
            int rc = hook_spawn(job, &run[nrun], timeout_ms);
            if (rc) {
                capture_finish_count(&job->st, job->st.hook_failed);
                hook_failed(job, strerror(-rc));
                free(job);
            } else {
                nrun++;
            }
            pthread_mutex_lock(&g_hook.lock);
        }
        pthread_mutex_unlock(&g_hook.lock);
        if (stopping && !nrun)
            break;

        struct pollfd pfd[CAPTURE_HOOK_MAX_RUNNING + 1];
        uint64_t now = hook_now_ms(), next = UINT64_MAX;
        bool no_pidfd = false;
        pfd[0] = (struct pollfd){.fd = g_hook.wake_fd, .events = POLLIN};
        for (size_t i = 0; i < nrun; i++) {
            pfd[i + 1] = (struct pollfd){.fd = run[i].pidfd, .events = POLLIN};
            no_pidfd |= run[i].pidfd < 0;
            if (run[i].deadline_ms < next)
                next = run[i].deadline_ms;
        }
        int wait_ms = next == UINT64_MAX ? -1 : next <= now ? 0 : (int)(next - now);
        if (no_pidfd && (wait_ms < 0 || wait_ms > 100))
            wait_ms = 100; /* without pidfds, poll the children */
        if (poll(pfd, nrun + 1, wait_ms) < 0 && errno != EINTR)
            LOGE(LOG_NO_CONN, "capture: on_finished thread: poll: %s", strerror(errno));
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            if (read(g_hook.wake_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                LOGE(LOG_NO_CONN, "capture: on_finished thread: read: %s", strerror(errno));
        }
        now = hook_now_ms();
        for (size_t i = 0; i < nrun;) {
            int status;
            pid_t p = waitpid(run[i].pid, &status, WNOHANG);
            if (p == run[i].pid || (p < 0 && errno == ECHILD)) {
                hook_reaped(&run[i], p < 0 ? 0 : status);
                run[i] = run[--nrun];
                continue;
            }
            if (run[i].deadline_ms <= now)
                hook_signal(&run[i], now);
            i++;
        }
    }
    return NULL;
}

void capture_hook_run(char *const *argv, const char *path, const struct capture_finish_stats *st,
                      const char *kind, uint64_t conn_id)
{
    size_t plen = strlen(path) + 1;
    size_t argc = 0, klen = strlen(kind) + 1, slen = plen + klen;
    while (argv[argc])
        slen += strlen(argv[argc++]) + 1;
    struct hook_job *job = malloc(sizeof(*job) + (argc + 1) * sizeof(char *) + slen);
    const char *why = NULL;
    if (!job) {
        why = "out of memory";
        goto err_skip;
    }
    *job = (struct hook_job){.argv = job->mem, .st = *st, .conn_id = conn_id};
    char *str = (char *)(job->mem + argc + 1);
    for (size_t i = 0; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        job->argv[i] = memcpy(str, argv[i], n);
        str += n;
    }
    job->argv[argc] = NULL;
    job->path = memcpy(str, path, plen);
    job->kind = memcpy(str + plen, kind, klen);

    pthread_mutex_lock(&g_hook.lock);
    if (!g_hook.started) {
        int rc = 0;
        if (g_hook.wake_fd < 0 && (g_hook.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
            rc = errno;
        if (!rc && (rc = pthread_create(&g_hook.thread, NULL, hook_main, NULL)) == 0)
            g_hook.started = true;
        if (rc) {
            pthread_mutex_unlock(&g_hook.lock);
            why = strerror(rc);
            goto err_free_job;
        }
    }
    if (g_hook.stop || g_hook.queued >= CAPTURE_HOOK_MAX_QUEUED) {
        pthread_mutex_unlock(&g_hook.lock);
        why = "too many hooks queued";
        goto err_free_job;
    }
    if (g_hook.tail)
        g_hook.tail->next = job;
    else
        g_hook.head = job;
    g_hook.tail = job;
    g_hook.queued++;
    pthread_mutex_unlock(&g_hook.lock);
    hook_wake();
    if (g_hook.skipping)
        LOGI(conn_id, "%s: on_finished hooks are queued again", kind);
    g_hook.skipping = false;
    return;

err_free_job:
    free(job);
err_skip:
    capture_finish_count(st, st->hook_skipped);
    if (!g_hook.skipping)
        LOGW(conn_id,
             "%s: on_finished for %s skipped: %s (%d running, %d queued at most; until one is "
             "queued again, further skips are only counted in %s.hook_skipped)",
             kind, path, why, CAPTURE_HOOK_MAX_RUNNING, CAPTURE_HOOK_MAX_QUEUED, kind);
    g_hook.skipping = true;
}

void capture_hook_shutdown(void)
{
    pthread_mutex_lock(&g_hook.lock);
    if (!g_hook.started) {
        pthread_mutex_unlock(&g_hook.lock);
        return;
    }
    g_hook.stop = true;
    pthread_mutex_unlock(&g_hook.lock);
    hook_wake();
    pthread_join(g_hook.thread, NULL);
    pthread_mutex_lock(&g_hook.lock);
    g_hook.started = false;
    g_hook.stop = false;
    pthread_mutex_unlock(&g_hook.lock);
    close(g_hook.wake_fd);
    g_hook.wake_fd = -1;
}
