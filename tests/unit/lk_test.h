/*  lk_test - a tiny assertion harness for unit tests run by ctest.
 *
 *  LK_CHECK(cond) records a failure and goes on; LK_TEST_MAIN prints
 *  "N passed, N failed" and returns non-zero if anything failed.
 */
#ifndef LK_TEST_H
#define LK_TEST_H

#include <stdio.h>
#include <string.h>

static int lk_test_passed, lk_test_failed;

#define LK_CHECK(cond)                                                                                       \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            lk_test_passed++;                                                                                \
        } else {                                                                                             \
            lk_test_failed++;                                                                                \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                  \
        }                                                                                                    \
    } while (0)

#define LK_CHECK_STR(a, b) LK_CHECK(strcmp((a), (b)) == 0)

#define LK_RUN(fn)                                                                                           \
    do {                                                                                                     \
        fprintf(stderr, "-- %s\n", #fn);                                                                     \
        fn();                                                                                                \
    } while (0)

#define LK_TEST_DONE()                                                                                       \
    (printf("%d passed, %d failed\n", lk_test_passed, lk_test_failed), lk_test_failed ? 1 : 0)

#endif
