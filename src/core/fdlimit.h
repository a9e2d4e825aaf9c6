/* The descriptor limit: the proxy (two sockets and up to two trace files per connection) and
 * capture2pcap (one open trace per connection overlapping in time) raise the soft limit to the
 * hard one, which is the operator's to set. */
#ifndef SOCKTAP_CORE_FDLIMIT_H
#define SOCKTAP_CORE_FDLIMIT_H

#include <stdint.h>

/* Raises RLIMIT_NOFILE's soft limit to the hard limit. *WAS and *NOW (both may be NULL) get the
 * soft limit before and after. Returns 0 or -errno (the limit stays as it was). */
int fd_limit_raise(uint64_t *was, uint64_t *now);

#endif
