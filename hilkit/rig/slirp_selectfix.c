/*
 * LD_PRELOAD shim for slirp 1.0.17 on 64-bit glibc (hilkit.rig.slirp).
 *
 * When idle, slirp's main loop asks select() for a timeout whose tv_usec is
 * (u_int)-1 stored in a 64-bit field: 4294967295 microseconds. glibc rejects a
 * tv_usec outside 0..999999 with EINVAL before any system call, and slirp
 * exits. This wrapper carries whole seconds out of tv_usec (4294 s: as good as
 * "no timeout", which is what slirp meant) and calls the real select().
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <sys/select.h>
#include <sys/time.h>

typedef int (*select_fn)(int, fd_set *, fd_set *, fd_set *, struct timeval *);

int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *tv)
{
    static select_fn next_select;

    if (next_select == NULL)
        next_select = (select_fn)dlsym(RTLD_NEXT, "select");
    if (tv != NULL && (tv->tv_usec < 0 || tv->tv_usec >= 1000000)) {
        unsigned long usec = (unsigned long)tv->tv_usec & 0xffffffffUL;
        tv->tv_sec += (time_t)(usec / 1000000UL);
        tv->tv_usec = (suseconds_t)(usec % 1000000UL);
    }
    return next_select(nfds, rd, wr, ex, tv);
}
