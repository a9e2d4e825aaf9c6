/* The output file of the trace tools (capture2pcap, socktap-trace convert): the rule that a
 * tool never destroys a capture. An output that is one of the inputs (same st_dev/st_ino, so
 * symlinks and hard links count) is always refused; an existing output is refused unless
 * FORCE, and the message says whether it holds a trace (probed with the trace readers). The
 * data goes to a 0600 temporary file in the output's directory (captures hold decrypted
 * payloads), which is fsynced and renamed over the output only when the tool succeeded, so a
 * failed or interrupted run leaves neither a half file nor a touched old one.
 *
 * "-" is stdout, written in place (refused only if stdout is one of the inputs, e.g. `>>`).
 * An existing output that is not a regular file (/dev/null, a FIFO) holds no capture and can
 * not be renamed over: it is opened and written in place. Rejected: O_TMPFILE + linkat
 * (linkat cannot replace an existing name, and not every file system has O_TMPFILE). */
#ifndef SOCKTAP_TRACE_TRACE_OUT_H
#define SOCKTAP_TRACE_TRACE_OUT_H

#include <stdbool.h>
#include <stddef.h>

struct trace_out {
    int fd;     /* write here (the caller may dup it); STDOUT_FILENO for "-" */
    char *tmp;  /* the temporary file, NULL when written in place; owned */
    char *dest; /* what tmp is renamed to (a symlink's target: the link stays); owned */
};

/* Checks PATH (borrowed, as the user gave it) against the N INPUTS (borrowed; "-" = stdin)
 * and opens the output into *O. TOOL prefixes messages. On success the caller must end with
 * exactly one of trace_out_commit or trace_out_abort. On failure returns -errno (-EEXIST for a
 * refused output), *O holds nothing, and ERR (ERRLEN bytes) holds a message that names the
 * path and says what is wrong, e.g. "capture2pcap: output t_2.pb is one of the inputs;
 * refusing to overwrite it". Installs handlers for SIGINT, SIGTERM and SIGHUP that remove the
 * temporary file before dying. */
int trace_out_open(struct trace_out *o, const char *tool, const char *path,
                   const char *const *inputs, size_t n, bool force, char *err, size_t errlen)
    __attribute__((warn_unused_result, nonnull(1, 2, 3, 7)));

/* As trace_out_open, but a named output is created (0600; O_EXCL unless FORCE) and written in
 * place, no temporary file and no signal handlers: for an output that never "ends"
 * (capture2pcap --follow), whose packets must be readable while it is written. An interrupted
 * run leaves what was written, a valid capture up to its last flush. */
int trace_out_open_direct(struct trace_out *o, const char *tool, const char *path,
                          const char *const *inputs, size_t n, bool force, char *err, size_t errlen)
    __attribute__((warn_unused_result, nonnull(1, 2, 3, 7)));

/* Makes the output final: fsync, close, rename over dest, fsync of the directory. The caller
 * has flushed and closed its own FILE on o->fd first. On failure the temporary file is
 * removed and ERR names the path. Returns 0 or -errno; *O is empty afterwards either way. */
int trace_out_commit(struct trace_out *o, const char *tool, const char *path, char *err,
                     size_t errlen) __attribute__((warn_unused_result, nonnull(1, 2, 3, 4)));

/* Discards the output: closes it and removes the temporary file (an in-place output keeps
 * what was written: there is nothing to roll back to). NULL-safe; *O is empty afterwards. */
void trace_out_abort(struct trace_out *o);

#endif
