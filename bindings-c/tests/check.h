/*
 * The checks shared by psremote's C test programs (test_api.c, test_replay.c): each counts a
 * pass or prints a FAIL line with its place; the program ends with "N passed, M failed".
 * Plain C99 that also compiles as C++17; include after psremote.h.
 */
#ifndef PSREMOTE_TESTS_CHECK_H
#define PSREMOTE_TESTS_CHECK_H

#include <stdio.h>

static int g_passed;
static int g_failed;
static int g_verbose;
/* What is being tested now (a test or scenario name), shown on every line. */
static const char *g_test = "";

static inline int check_at(int ok, const char *what, const char *file, int line) {
    if (ok) {
        g_passed++;
        if (g_verbose) {
            printf("  ok   [%s] %s\n", g_test, what);
        }
    } else {
        g_failed++;
        printf("  FAIL [%s] %s:%d: %s\n", g_test, file, line, what);
    }
    fflush(stdout);
    return ok;
}

#define CHECK(cond) check_at((cond) ? 1 : 0, #cond, __FILE__, __LINE__)

static inline void note_error(const char *context, psr_error *err) {
    if (err != NULL) {
        const char *msg = psr_error_message(err);
        printf("       %s: %s (%s)\n", context, msg != NULL ? msg : "(no message)",
               psr_result_name(psr_error_code(err)));
    }
}

/* The call succeeded: OK and no error object. Frees a stray error object. */
static inline int expect_ok_at(psr_result rc, psr_error **err, const char *what, const char *file, int line) {
    char buf[512];
    int ok = rc == PSR_RESULT_OK && *err == NULL;
    snprintf(buf, sizeof buf, "%s == OK (got %s)", what, psr_result_name(rc));
    check_at(ok, buf, file, line);
    if (!ok) {
        note_error(what, *err);
    }
    psr_error_free(*err);
    *err = NULL;
    return ok;
}

/* The call failed with `expected`, and the error object says the same with a message. The
 * error object stays in *err for further checks (the caller frees it). */
static inline int expect_fail_keep_at(psr_result rc, psr_error **err, psr_result expected, const char *what,
                                      const char *file, int line) {
    char buf[512];
    int ok;
    const char *msg;
    snprintf(buf, sizeof buf, "%s == %s (got %s)", what, psr_result_name(expected), psr_result_name(rc));
    ok = check_at(rc == expected, buf, file, line);
    snprintf(buf, sizeof buf, "%s sets an error object with code %s and a message", what, psr_result_name(expected));
    msg = psr_error_message(*err);
    ok &= check_at(*err != NULL && psr_error_code(*err) == expected && msg != NULL && msg[0] != '\0', buf, file,
                   line);
    if (!ok) {
        note_error(what, *err);
    }
    return ok;
}

/* As expect_fail_keep_at, then frees the error object. */
static inline int expect_fail_at(psr_result rc, psr_error **err, psr_result expected, const char *what,
                                 const char *file, int line) {
    int ok = expect_fail_keep_at(rc, err, expected, what, file, line);
    psr_error_free(*err);
    *err = NULL;
    return ok;
}

#define EXPECT_OK(call) expect_ok_at((call), &err, #call, __FILE__, __LINE__)

#endif
