/*
 * Small macros every module uses, written once (as libuv's uv-common.h does).
 *
 * They carry the sl_ prefix like every other name of the project, which also
 * keeps them clear of C2y's countof (<stdcountof.h>) and of the container_of
 * that other code bases define in their own headers.
 *
 * @thread any
 */
#ifndef SLUICE_UTIL_H
#define SLUICE_UTIL_H

#include <stddef.h>

/*
 * The object of type <type> whose member <member> is at <ptr>: how a callback
 * that receives a pointer to an embedded handle or list link finds the
 * object around it. <ptr> must point into such an object. (The formatter is
 * off for the line: it takes "(ptr) -" for a cast of a negation.)
 */
/* clang-format off */
#define sl_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
/* clang-format on */

/*
 * The number of elements of array <a>. <a> must be an array, not a pointer;
 * -Wall (-Wsizeof-pointer-div) reports a pointer passed by mistake.
 */
#define sl_countof(a) (sizeof(a) / sizeof((a)[0]))

#endif
