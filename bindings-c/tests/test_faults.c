/*
 * psremote's C API against a broken or hostile server (issue 12 item 5).
 *
 *   test_faults OP EXPECTED MESSAGE URL [TIMEOUT_MS]
 *
 * OP is "cmd" (psr_client_run_cmd of `echo hi`; with TIMEOUT_MS, psr_client_cmd_shell_open,
 * psr_cmd_shell_start and psr_cmd_process_wait with that timeout, then psr_cmd_process_terminate
 * and psr_cmd_shell_close) or "ps" (psr_pool_open_with_options, a `Write-Output hello`
 * pipeline through psr_pool_start_script and psr_pipeline_wait, psr_pool_close; TIMEOUT_MS bounds
 * the pool's opening and the wait). EXPECTED is the
 * psr_result the first failing call must return, by its psr_result_name ("PSR_RESULT_PROTOCOL"),
 * with an error object of that code whose message contains MESSAGE; "PSR_RESULT_OK" means every
 * call must succeed with the right output. EXPECTED may list several codes separated by '|' (a
 * request the client may send again after the fault fails or succeeds). URL is an endpoint started with one fault injected
 * (`--misbehave MODE` or `--drop-connection`). Checked besides: the process's peak RSS (VmHWM)
 * grows by less than 64 MiB over the call. Whether anything was left on the server is checked by
 * the driver, bindings-c/tests/faults.py, which starts the endpoint per case and reads its
 * GET /_control/state afterwards.
 *
 * Plain C99 that also compiles as C++17. The last line printed is "N passed, M failed"; the exit
 * status is nonzero when a check failed. PSR_TEST_VERBOSE=1 prints every check.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psremote.h"

#include "check.h"

/* Whether `name` is one of the '|'-separated names in `list`. */
static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    const char *at = list;
    while ((at = strstr(at, name)) != NULL) {
        if ((at == list || at[-1] == '|') && (at[n] == '\0' || at[n] == '|')) {
            return 1;
        }
        at += n;
    }
    return 0;
}

/* Peak RSS growth a faulty reply may cost (replies are bounded at 228736 bytes). */
#define MAX_GROWTH_KB (64L * 1024L)

/* The process's peak resident memory (VmHWM) in KiB, or -1. */
static long peak_kb(void) {
    char line[256];
    long kb = -1;
    FILE *status = fopen("/proc/self/status", "r");
    if (status == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, status) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(status);
    return kb;
}

/* What the operation ended with: the first failing call's code and message, or OK and the output. */
typedef struct {
    psr_result rc;
    char message[1024];
    char output[256];
} outcome;

static void failed(outcome *o, psr_result rc, psr_error **err) {
    const char *msg = psr_error_message(*err);
    o->rc = rc;
    snprintf(o->message, sizeof o->message, "%s", msg != NULL ? msg : "");
    if (*err == NULL || psr_error_code(*err) != rc) {
        /* An error object that disagrees with the result code is a failure of its own. */
        CHECK(*err != NULL && psr_error_code(*err) == rc);
    }
    psr_error_free(*err);
    *err = NULL;
}

static void run_cmd(psr_client *client, outcome *o) {
    const char *args[] = {"hi"};
    psr_cmd_result *result = NULL;
    psr_error *err = NULL;
    size_t len = 0;
    const uint8_t *out;
    psr_result rc = psr_client_run_cmd(client, "echo", args, 1, NULL, 0, &result, &err);
    if (rc != PSR_RESULT_OK) {
        failed(o, rc, &err);
        return;
    }
    out = psr_cmd_result_stdout(result, &len);
    snprintf(o->output, sizeof o->output, "%.*s", (int)(len < 200 ? len : 200), out != NULL ? (const char *)out : "");
    psr_cmd_result_free(result);
}

/* The command with a deadline: a server that never answers it fails the wait with TIMEOUT. */
static void run_cmd_within(psr_client *client, uint32_t timeout_ms, outcome *o) {
    const char *args[] = {"hi"};
    psr_cmd_shell *shell = NULL;
    psr_cmd_process *process = NULL;
    psr_cmd_result *result = NULL;
    psr_error *err = NULL;
    size_t len = 0;
    const uint8_t *out;
    psr_result rc = psr_client_cmd_shell_open(client, NULL, &shell, &err);
    if (rc == PSR_RESULT_OK) {
        rc = psr_cmd_shell_start(shell, "echo", args, 1, false, &process, &err);
    }
    if (rc == PSR_RESULT_OK) {
        rc = psr_cmd_process_wait(process, timeout_ms, &result, &err);
    }
    if (rc != PSR_RESULT_OK) {
        failed(o, rc, &err);
    } else {
        out = psr_cmd_result_stdout(result, &len);
        snprintf(o->output, sizeof o->output, "%.*s", (int)(len < 200 ? len : 200),
                 out != NULL ? (const char *)out : "");
        psr_cmd_result_free(result);
    }
    if (process != NULL) {
        /* Stops the command the deadline gave up on (nothing to do after a result). */
        psr_cmd_process_terminate(process, &err);
        psr_error_free(err);
        err = NULL;
        psr_cmd_process_free(process);
    }
    if (shell != NULL) {
        EXPECT_OK(psr_cmd_shell_close(shell, &err));
        psr_cmd_shell_free(shell);
    }
}

/* `timeout_ms` (0: none) bounds the pool's opening and, separately, the pipeline's wait. */
static void run_ps(psr_client *client, uint32_t timeout_ms, outcome *o) {
    psr_pool *pool = NULL;
    psr_pool_options *options = psr_pool_options_new();
    psr_pipeline *pl = NULL;
    psr_invocation *inv = NULL;
    psr_error *err = NULL;
    psr_result rc;
    if (!CHECK(options != NULL)) {
        return;
    }
    EXPECT_OK(psr_pool_options_set_open_timeout_ms(options, timeout_ms, &err));
    rc = psr_pool_open_with_options(client, NULL, NULL, options, &pool, &err);
    psr_pool_options_free(options);
    if (rc != PSR_RESULT_OK) {
        failed(o, rc, &err);
        return;
    }
    rc = psr_pool_start_script(pool, "Write-Output hello", false, &pl, &err);
    if (rc == PSR_RESULT_OK) {
        rc = psr_pipeline_wait(pl, NULL, timeout_ms, &inv, &err);
    }
    if (rc != PSR_RESULT_OK) {
        failed(o, rc, &err);
    } else if (psr_invocation_output_count(inv) == 1) {
        snprintf(o->output, sizeof o->output, "%s", psr_invocation_output_json(inv, 0));
    } else {
        snprintf(o->output, sizeof o->output, "%zu outputs", psr_invocation_output_count(inv));
    }
    psr_invocation_free(inv);
    psr_pipeline_free(pl);
    rc = psr_pool_close(pool, &err);
    /* A pool broken by the fault may refuse the close; it still deletes its shell when freed. */
    if (rc != PSR_RESULT_OK && g_verbose) {
        note_error("psr_pool_close", err);
    }
    psr_error_free(err);
    psr_pool_free(pool);
}

int main(int argc, char **argv) {
    const char *verbose = getenv("PSR_TEST_VERBOSE");
    psr_config *cfg;
    psr_client *client = NULL;
    psr_error *err = NULL;
    outcome o;
    long before, after;
    int is_cmd;
    g_verbose = verbose != NULL && verbose[0] == '1';
    if (argc < 5 || argc > 6 || (strcmp(argv[1], "cmd") != 0 && strcmp(argv[1], "ps") != 0)) {
        fprintf(stderr, "usage: test_faults cmd|ps EXPECTED MESSAGE URL [TIMEOUT_MS]\n");
        return 2;
    }
    is_cmd = strcmp(argv[1], "cmd") == 0;
    g_test = argv[1];
    cfg = psr_config_new(argv[4], "DOMAIN\\user", "Passw0rd!");
    if (!CHECK(cfg != NULL)) {
        return 1;
    }
    EXPECT_OK(psr_config_set_auth(cfg, "ntlm", &err));
    EXPECT_OK(psr_config_set_trusted_hosts(cfg, "127.0.0.1", &err));
    EXPECT_OK(psr_config_set_operation_timeout_ms(cfg, 2000, &err));
    if (!EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        psr_config_free(cfg);
        printf("%d passed, %d failed\n", g_passed, g_failed);
        return 1;
    }
    memset(&o, 0, sizeof o);
    before = peak_kb();
    if (argc == 6 && is_cmd) {
        run_cmd_within(client, (uint32_t)strtoul(argv[5], NULL, 10), &o);
    } else if (is_cmd) {
        run_cmd(client, &o);
    } else {
        run_ps(client, argc == 6 ? (uint32_t)strtoul(argv[5], NULL, 10) : 0, &o);
    }
    after = peak_kb();
    printf("       outcome: %s %s%s\n", psr_result_name(o.rc), o.message, o.output);
    CHECK(listed(argv[2], psr_result_name(o.rc)));
    if (o.rc == PSR_RESULT_OK) {
        CHECK(strcmp(o.output, is_cmd ? "hi\n" : "\"hello\"") == 0);
    } else {
        CHECK(strstr(o.message, argv[3]) != NULL);
    }
    CHECK(before > 0 && after - before < MAX_GROWTH_KB);
    psr_client_free(client);
    psr_config_free(cfg);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
