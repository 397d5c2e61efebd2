/*
 * psremote's C API against recorded real-Windows conversations.
 *
 *   test_replay SCENARIO URL
 *
 * URL is a replay server (`python -m psremote_testserver.replay --transcript FILE --user replay
 * --password Replay-Passw0rd!`) answering with the responses Windows gave pypsrp in
 * core/tests/data/windows-transcripts/FILE. The scenario makes the calls of the public C API
 * (include/psremote.h) equivalent to what pypsrp did in the recording, over http with Basic
 * (psr_config_set_auth, psr_config_set_allow_unencrypted), and checks the recorded outcome:
 * output as JSON and CLIXML, error records, streams through psr_callbacks, host callbacks,
 * exit codes and states, files copied and fetched (bytes, SHA-1, typed file errors). Whether the server saw exactly the recorded conversation is checked by
 * the driver, bindings-c/tests/replay.py, which starts the server per scenario and reads its
 * GET /_control/state afterwards (as core/tests/replay.rs's assert_exact does).
 *
 * Plain C99 that also compiles as C++17. The last line printed is "N passed, M failed"; the exit
 * status is nonzero when a check failed or the scenario is unknown. `test_replay --list` prints
 * the scenario names. PSR_TEST_VERBOSE=1 prints every check.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "psremote.h"

#include "check.h"

/* ------------------------------------------------------------------------------------------ */
/* Checks                                                                                      */
/* ------------------------------------------------------------------------------------------ */

#define EXPECT_FAIL(call, code) expect_fail_keep_at((call), &err, (code), #call, __FILE__, __LINE__)

static int contains(const char *haystack, const char *needle) {
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

static int str_eq(const char *a, const char *b) {
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* GUIDs equal whatever their letters' case. */
static int same_id(const char *a, const char *b) {
    size_t i;
    if (a == NULL || b == NULL || strlen(a) != strlen(b)) {
        return 0;
    }
    for (i = 0; a[i] != '\0'; i++) {
        char x = a[i], y = b[i];
        if (x >= 'a' && x <= 'z') {
            x = (char)(x - 'a' + 'A');
        }
        if (y >= 'a' && y <= 'z') {
            y = (char)(y - 'a' + 'A');
        }
        if (x != y) {
            return 0;
        }
    }
    return 1;
}

/* A check that prints both sides when two strings differ. */
static int expect_str_at(const char *got, const char *want, const char *what, const char *file, int line) {
    char buf[512];
    int ok = str_eq(got, want);
    snprintf(buf, sizeof buf, "%s == \"%s\"", what, want);
    check_at(ok, buf, file, line);
    if (!ok) {
        printf("       got: %s\n", got != NULL ? got : "(NULL)");
    }
    return ok;
}

#define EXPECT_STR(got, want) expect_str_at((got), (want), #got, __FILE__, __LINE__)

/* Bytes equal to a NUL-terminated string. */
static int bytes_are(const uint8_t *data, size_t len, const char *want) {
    size_t n = strlen(want);
    return len == n && (n == 0 || (data != NULL && memcmp(data, want, n) == 0));
}

/* ------------------------------------------------------------------------------------------ */
/* The connection                                                                              */
/* ------------------------------------------------------------------------------------------ */

static const char *g_url;
static const char *const USERNAME = "replay";
static const char *const PASSWORD = "Replay-Passw0rd!";
/* Hang guards: generous limits so that a stuck scenario fails instead of blocking make test. */
static const uint32_t WAIT_MS = 60000;

/* Connects with Basic over http, as the replay server speaks. NULL (and a failed check) if not. */
static psr_client *connect_client(void) {
    psr_error *err = NULL;
    psr_client *client = NULL;
    psr_config *cfg = psr_config_new(g_url, USERNAME, PASSWORD);
    if (!CHECK(cfg != NULL)) {
        return NULL;
    }
    EXPECT_OK(psr_config_set_auth(cfg, "basic", &err));
    EXPECT_OK(psr_config_set_allow_unencrypted(cfg, true, &err));
    if (!EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        client = NULL;
    }
    psr_config_free(cfg);
    return client;
}

static psr_pool *open_pool(psr_client *client, const psr_host *host) {
    psr_error *err = NULL;
    psr_pool *pool = NULL;
    if (!EXPECT_OK(psr_pool_open(client, NULL, host, &pool, &err))) {
        return NULL;
    }
    return pool;
}

static void close_pool(psr_pool *pool) {
    psr_error *err = NULL;
    EXPECT_OK(psr_pool_close(pool, &err));
    psr_pool_free(pool);
}

/* ------------------------------------------------------------------------------------------ */
/* Pipelines: what the callbacks saw                                                           */
/* ------------------------------------------------------------------------------------------ */

#define MAX_SEEN 16

typedef struct {
    int outputs;
    char *output_json[MAX_SEEN];
    char *output_clixml[MAX_SEEN];
    int records[6]; /* by psr_stream */
    char *record_text[6];  /* the first message of each stream */
    int progress;
    char *progress_activity[MAX_SEEN];
    int32_t progress_percent[MAX_SEEN];
} seen;

static char *dup_str(const char *s) {
    size_t n;
    char *copy;
    if (s == NULL) {
        return NULL;
    }
    n = strlen(s) + 1;
    copy = (char *)malloc(n);
    if (copy != NULL) {
        memcpy(copy, s, n);
    }
    return copy;
}

static int32_t on_output(void *userdata, const char *json, const char *clixml) {
    seen *s = (seen *)userdata;
    if (s->outputs < MAX_SEEN) {
        s->output_json[s->outputs] = dup_str(json);
        s->output_clixml[s->outputs] = dup_str(clixml);
    }
    s->outputs++;
    return 0;
}

static int32_t on_record(void *userdata, psr_stream stream, const char *message) {
    seen *s = (seen *)userdata;
    if (stream < 6) {
        if (s->records[stream] == 0) {
            s->record_text[stream] = dup_str(message);
        }
        s->records[stream]++;
    }
    return 0;
}

static int32_t on_progress(void *userdata, const char *activity, const char *status, int32_t percent) {
    seen *s = (seen *)userdata;
    (void)status;
    if (s->progress < MAX_SEEN) {
        s->progress_activity[s->progress] = dup_str(activity);
        s->progress_percent[s->progress] = percent;
    }
    s->progress++;
    return 0;
}

static void seen_free(seen *s) {
    int i;
    for (i = 0; i < MAX_SEEN; i++) {
        free(s->output_json[i]);
        free(s->output_clixml[i]);
        free(s->progress_activity[i]);
    }
    for (i = 0; i < 6; i++) {
        free(s->record_text[i]);
    }
    memset(s, 0, sizeof *s);
}

/* Runs `script` (with `ninputs` JSON input values when `inputs` is not NULL) to its end, the
 * callbacks filling `s`. NULL (and a failed check) when it could not. */
static psr_invocation *run_script(psr_pool *pool, const char *script, const char *const *inputs, size_t ninputs,
                                  seen *s) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_invocation *inv = NULL;
    psr_callbacks cb;
    size_t i;
    memset(&cb, 0, sizeof cb);
    cb.userdata = s;
    cb.on_output = on_output;
    cb.on_record = on_record;
    cb.on_progress = on_progress;
    if (!EXPECT_OK(psr_pool_start_script(pool, script, inputs != NULL, &pl, &err))) {
        return NULL;
    }
    if (inputs != NULL) {
        for (i = 0; i < ninputs; i++) {
            EXPECT_OK(psr_pipeline_send_input_json(pl, inputs[i], &err));
        }
        EXPECT_OK(psr_pipeline_end_input(pl, &err));
    }
    if (!EXPECT_OK(psr_pipeline_wait(pl, &cb, WAIT_MS, &inv, &err))) {
        inv = NULL;
    }
    psr_pipeline_free(pl);
    return inv;
}

/* ------------------------------------------------------------------------------------------ */
/* Runspace pools                                                                              */
/* ------------------------------------------------------------------------------------------ */

/* Open and close a pool: the recorded Create with its SESSION_CAPABILITY and INIT_RUNSPACEPOOL,
 * the pool's Receive, the Delete. */
static void psrp_open_runspace(psr_client *client) {
    psr_error *err = NULL;
    psr_pipeline *pl = (psr_pipeline *)NULL;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    EXPECT_OK(psr_pool_close(pool, &err));
    /* Closed means closed: nothing more reaches the server. */
    if (EXPECT_FAIL(psr_pool_close(pool, &err), PSR_RESULT_CLOSED)) {
        psr_error_free(err);
        err = NULL;
    }
    if (EXPECT_FAIL(psr_pool_start_script(pool, "1+1", false, &pl, &err), PSR_RESULT_CLOSED)) {
        CHECK(pl == NULL);
    }
    psr_error_free(err);
    psr_pool_free(pool);
}

/* Two invocations of "1+1" on one pool, each 2. */
static void psrp_multiple_invocations(psr_client *client) {
    int round;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    for (round = 0; round < 2; round++) {
        seen s;
        psr_invocation *inv;
        memset(&s, 0, sizeof s);
        inv = run_script(pool, "1+1", NULL, 0, &s);
        if (inv != NULL) {
            CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
            CHECK(!psr_invocation_had_errors(inv));
            CHECK(psr_invocation_output_count(inv) == 1);
            EXPECT_STR(psr_invocation_output_json(inv, 0), "2");
            CHECK(contains(psr_invocation_output_clixml(inv, 0), "<I32>2</I32>"));
            CHECK(psr_invocation_error_count(inv) == 0);
            CHECK(s.outputs == 1);
            EXPECT_STR(s.output_json[0], "2");
        }
        psr_invocation_free(inv);
        seen_free(&s);
    }
    close_pool(pool);
}

/* "echo new" (pypsrp added "echo hi", cleared the commands and added "echo new"): its output and
 * the module-loading progress record. */
static void psrp_clear_commands(psr_client *client) {
    seen s;
    psr_invocation *inv;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    memset(&s, 0, sizeof s);
    inv = run_script(pool, "echo new", NULL, 0, &s);
    if (inv != NULL) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
        CHECK(psr_invocation_output_count(inv) == 1);
        EXPECT_STR(psr_invocation_output_json(inv, 0), "\"new\"");
        CHECK(contains(psr_invocation_output_clixml(inv, 0), "<S>new</S>"));
        CHECK(s.progress == 1);
        EXPECT_STR(s.progress_activity[0], "Preparing modules for first use.");
    }
    psr_invocation_free(inv);
    seen_free(&s);
    close_pool(pool);
}

static const char *const ERROR_FAILED_SCRIPT =
    "$ErrorActionPreference = 'Stop'; Write-Output before; Write-Error error; Write-Output after";

/* Write-Error under ErrorActionPreference Stop: "before", then the pipeline Failed with the
 * error record as its terminating error. */
static void psrp_error_failed(psr_client *client) {
    seen s;
    psr_invocation *inv;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    memset(&s, 0, sizeof s);
    inv = run_script(pool, ERROR_FAILED_SCRIPT, NULL, 0, &s);
    if (inv != NULL) {
        size_t n = psr_invocation_error_count(inv);
        const char *json = psr_invocation_json(inv);
        CHECK(psr_invocation_state(inv) == PSR_STATE_FAILED);
        CHECK(psr_invocation_had_errors(inv));
        CHECK(psr_invocation_output_count(inv) == 1);
        EXPECT_STR(psr_invocation_output_json(inv, 0), "\"before\"");
        CHECK(s.outputs == 1);
        /* The terminating error is the last error; under Stop there is no separate error record. */
        if (CHECK(n >= 1)) {
            CHECK(contains(psr_invocation_error_message(inv, n - 1), "error"));
            EXPECT_STR(psr_invocation_error_id(inv, n - 1), "Microsoft.PowerShell.Commands.WriteErrorException");
        }
        CHECK(contains(json, "\"state\":\"Failed\""));
        CHECK(contains(json, "\"error\":{"));
        CHECK(contains(json, "\"message\":\"error\""));
    }
    psr_invocation_free(inv);
    seen_free(&s);
    close_pool(pool);
}

static const char *const STREAMS_SCRIPT = "$DebugPreference = 'Continue'\n"
                                          "            $VerbosePreference = 'Continue'\n"
                                          "            Write-Debug 'debug stream'\n"
                                          "            Write-Verbose 'verbose stream'\n"
                                          "            Write-Error 'error stream'\n"
                                          "            Write-Output 'output stream'\n"
                                          "            Write-Warning 'warning stream'\n"
                                          "            Write-Information 'information stream'\n"
                                          "            ";

/* Every stream once, through the callbacks and in the result. */
static void psrp_stream_output_invocation(psr_client *client) {
    seen s;
    psr_invocation *inv;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    memset(&s, 0, sizeof s);
    inv = run_script(pool, STREAMS_SCRIPT, NULL, 0, &s);
    if (inv != NULL) {
        const char *json = psr_invocation_json(inv);
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
        CHECK(psr_invocation_had_errors(inv));
        CHECK(psr_invocation_output_count(inv) == 1);
        EXPECT_STR(psr_invocation_output_json(inv, 0), "\"output stream\"");
        CHECK(psr_invocation_error_count(inv) == 1);
        CHECK(contains(psr_invocation_error_message(inv, 0), "error stream"));
        EXPECT_STR(psr_invocation_error_id(inv, 0), "Microsoft.PowerShell.Commands.WriteErrorException");
        CHECK(s.outputs == 1);
        EXPECT_STR(s.output_json[0], "\"output stream\"");
        CHECK(s.records[PSR_STREAM_ERROR] == 1);
        CHECK(contains(s.record_text[PSR_STREAM_ERROR], "error stream"));
        CHECK(s.records[PSR_STREAM_WARNING] == 1);
        EXPECT_STR(s.record_text[PSR_STREAM_WARNING], "warning stream");
        CHECK(s.records[PSR_STREAM_VERBOSE] == 1);
        EXPECT_STR(s.record_text[PSR_STREAM_VERBOSE], "verbose stream");
        CHECK(s.records[PSR_STREAM_DEBUG] == 1);
        EXPECT_STR(s.record_text[PSR_STREAM_DEBUG], "debug stream");
        CHECK(s.records[PSR_STREAM_INFORMATION] == 1);
        EXPECT_STR(s.record_text[PSR_STREAM_INFORMATION], "information stream");
        CHECK(s.progress == 1);
        CHECK(contains(json, "\"warnings\":[\"warning stream\"]"));
        CHECK(contains(json, "\"verbose\":[\"verbose stream\"]"));
        CHECK(contains(json, "\"debug\":[\"debug stream\"]"));
        CHECK(contains(json, "\"information\":[\"information stream\"]"));
    }
    psr_invocation_free(inv);
    seen_free(&s);
    close_pool(pool);
}

static const char *const WITH_INPUT_SCRIPT = "begin {\n"
                                             "                $DebugPreference = 'Continue'\n"
                                             "                Write-Debug \"Start Block\"\n"
                                             "            }\n"
                                             "            process {\n"
                                             "                $input\n"
                                             "            }\n"
                                             "            end {\n"
                                             "                Write-Debug \"End Block\"\n"
                                             "            }";

/* Input given as JSON: a string, an integer, an object (a hashtable) and an array, echoed back. */
static void psrp_with_input(psr_client *client) {
    static const char *const inputs[] = {"\"1\"", "2", "{\"a\": \"b\"}", "[\"a\", \"b\"]"};
    seen s;
    psr_invocation *inv;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    memset(&s, 0, sizeof s);
    inv = run_script(pool, WITH_INPUT_SCRIPT, inputs, sizeof inputs / sizeof inputs[0], &s);
    if (inv != NULL) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
        if (CHECK(psr_invocation_output_count(inv) == 4)) {
            EXPECT_STR(psr_invocation_output_json(inv, 0), "\"1\"");
            EXPECT_STR(psr_invocation_output_json(inv, 1), "2");
            /* A deserialized hashtable keeps its dictionary, with its type name. */
            CHECK(contains(psr_invocation_output_clixml(inv, 2), "Deserialized.System.Collections.Hashtable"));
            CHECK(contains(psr_invocation_output_clixml(inv, 2), "<DCT>"));
            CHECK(contains(psr_invocation_output_json(inv, 2), "\"a\":\"b\""));
            CHECK(contains(psr_invocation_output_clixml(inv, 3), "<LST>"));
            CHECK(contains(psr_invocation_output_json(inv, 3), "[\"a\",\"b\"]"));
        }
        CHECK(s.records[PSR_STREAM_DEBUG] == 2);
        EXPECT_STR(s.record_text[PSR_STREAM_DEBUG], "Start Block");
        CHECK(contains(psr_invocation_json(inv), "\"debug\":[\"Start Block\",\"End Block\"]"));
    }
    psr_invocation_free(inv);
    seen_free(&s);
    close_pool(pool);
}

/* Host callbacks: counted; they fail the call, which the scenarios below must never make. */
typedef struct {
    int read_line;
    int prompt_for_credential;
} host_calls;

static int32_t host_read_line(void *userdata, const char *prompt, char *buf, size_t buf_len) {
    host_calls *h = (host_calls *)userdata;
    (void)prompt;
    h->read_line++;
    if (buf_len > 0) {
        buf[0] = '\0';
    }
    return 1;
}

static int32_t host_prompt_for_credential(void *userdata, const char *caption, const char *message, char *user,
                                          size_t user_len, char *password, size_t password_len) {
    host_calls *h = (host_calls *)userdata;
    (void)caption;
    (void)message;
    (void)user_len;
    (void)password_len;
    h->prompt_for_credential++;
    user[0] = '\0';
    password[0] = '\0';
    return 1;
}

/* A pool with a host: $host.CurrentCulture is answered by the server (en-US), SetShouldExit(1) is
 * a void host call (no answer goes back; the driver checks no PIPELINE_HOST_RESPONSE was sent),
 * and neither reaches the C host's callbacks. */
static void psrp_pshost_methods(psr_client *client) {
    host_calls calls;
    psr_host host;
    seen s;
    psr_invocation *inv;
    psr_pool *pool;
    memset(&calls, 0, sizeof calls);
    memset(&host, 0, sizeof host);
    host.userdata = &calls;
    host.read_line = host_read_line;
    host.prompt_for_credential = host_prompt_for_credential;
    pool = open_pool(client, &host);
    if (pool == NULL) {
        return;
    }
    memset(&s, 0, sizeof s);
    inv = run_script(pool, "$host.CurrentCulture; $host.SetShouldExit(1)", NULL, 0, &s);
    if (inv != NULL) {
        const char *json = psr_invocation_output_json(inv, 0);
        const char *xml = psr_invocation_output_clixml(inv, 0);
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
        CHECK(!psr_invocation_had_errors(inv));
        CHECK(psr_invocation_output_count(inv) == 1);
        CHECK(contains(json, "\"$toString\":\"en-US\""));
        CHECK(contains(json, "\"LCID\":1033"));
        CHECK(contains(json, "System.Globalization.CultureInfo"));
        CHECK(contains(xml, "<ToString>en-US</ToString>"));
        CHECK(contains(xml, "<I32 N=\"LCID\">1033</I32>"));
    }
    CHECK(calls.read_line == 0);
    CHECK(calls.prompt_for_credential == 0);
    psr_invocation_free(inv);
    seen_free(&s);
    close_pool(pool);
}

/* ------------------------------------------------------------------------------------------ */
/* Sessions that outlive the client: disconnect, reconnect, list, connect, is_alive            */
/* ------------------------------------------------------------------------------------------ */

/* pypsrp's test: two pools opened and disconnected (the first reconnected and disconnected
 * again) and freed while disconnected, which leaves them on the server; a second client (a new
 * WS-Man session) lists them, connects to each and closes them. */
static void psrp_disconnect_runspaces(psr_client *client) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_pool *pool1;
    psr_pool *pool2;
    psr_client *client2;
    char ids[2][64];
    psr_pool *connected[2];
    char *json = NULL;
    int i;

    pool1 = open_pool(client, NULL);
    if (pool1 == NULL) {
        return;
    }
    EXPECT_OK(psr_pool_disconnect(pool1, &err));
    EXPECT_FAIL(psr_pool_start_script(pool1, "1", false, &pl, &err), PSR_RESULT_DISCONNECTED);
    CHECK(pl == NULL);
    psr_error_free(err);
    err = NULL;
    EXPECT_FAIL(psr_pool_disconnect(pool1, &err), PSR_RESULT_DISCONNECTED);
    psr_error_free(err);
    err = NULL;
    EXPECT_OK(psr_pool_reconnect(pool1, &err));
    EXPECT_OK(psr_pool_disconnect(pool1, &err));
    pool2 = open_pool(client, NULL);
    if (pool2 == NULL) {
        psr_pool_free(pool1);
        return;
    }
    EXPECT_OK(psr_pool_disconnect(pool2, &err));
    CHECK(psr_pool_id(pool1) != NULL && strlen(psr_pool_id(pool1)) == 36);
    CHECK(psr_pool_id(pool2) != NULL && strlen(psr_pool_id(pool2)) == 36);
    snprintf(ids[0], sizeof ids[0], "%s", psr_pool_id(pool1) != NULL ? psr_pool_id(pool1) : "");
    snprintf(ids[1], sizeof ids[1], "%s", psr_pool_id(pool2) != NULL ? psr_pool_id(pool2) : "");
    psr_pool_free(pool1);
    psr_pool_free(pool2);

    client2 = connect_client();
    if (client2 == NULL) {
        return;
    }
    if (EXPECT_OK(psr_client_list_pools_json(client2, &json, &err))) {
        const char *first = strstr(json, ids[0]);
        const char *second = strstr(json, ids[1]);
        CHECK(first != NULL && second != NULL && first < second);
        CHECK(contains(json, "\"state\":\"Disconnected\""));
        CHECK(!contains(json, "\"state\":\"Connected\""));
        CHECK(contains(json, "\"configuration_name\":\"Microsoft.PowerShell\""));
        CHECK(contains(json, "\"owner\":\"WIN-NNMU24VVKJ0\\\\vagrant\""));
        CHECK(contains(json, "\"idle_timeout_ms\":7200000"));
        CHECK(contains(json, "\"buffer_mode\":\"block\""));
        CHECK(contains(json, "\"pipelines\":[]"));
        if (g_failed) {
            printf("       %s\n", json);
        }
        psr_string_free(json);
    }
    /* As the recorded client: connect to both, then close both (each connected pool's Receive
     * loop posts its first Receive meanwhile, as the recorded client's Receive after Connect). */
    for (i = 0; i < 2; i++) {
        connected[i] = NULL;
        if (EXPECT_OK(psr_client_pool_connect(client2, ids[i], NULL, NULL, NULL, &connected[i], &err))) {
            EXPECT_STR(psr_pool_id(connected[i]), ids[i]);
        } else {
            connected[i] = NULL;
        }
    }
    for (i = 0; i < 2; i++) {
        if (connected[i] != NULL) {
            close_pool(connected[i]);
        }
    }
    psr_client_free(client2);
}

/* is_alive on a live pool, then on one deleted behind the client's back (InvalidSelectors):
 * false, and the pool counts as closed (no Delete follows, as in the recording). */
static void psrp_is_alive_invalid_selectors(psr_client *client) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    bool alive = false;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    if (EXPECT_OK(psr_pool_is_alive(pool, &alive, &err))) {
        CHECK(alive);
    }
    alive = true;
    if (EXPECT_OK(psr_pool_is_alive(pool, &alive, &err))) {
        CHECK(!alive);
    }
    alive = true;
    if (EXPECT_OK(psr_pool_is_alive(pool, &alive, &err))) {
        CHECK(!alive); /* known gone: no further request */
    }
    EXPECT_FAIL(psr_pool_start_script(pool, "1", false, &pl, &err), PSR_RESULT_CLOSED);
    CHECK(pl == NULL);
    psr_error_free(err);
    err = NULL;
    /* The pool is closed already: closing it says so, without a request. */
    EXPECT_FAIL(psr_pool_close(pool, &err), PSR_RESULT_CLOSED);
    psr_error_free(err);
    psr_pool_free(pool);
}

/* Any other fault of the Get (the recorded client provoked InvalidMessageInformationHeader) is
 * an error, not a verdict; the pool is still closed normally. */
static void psrp_is_alive_other_wsman_error(psr_client *client) {
    psr_error *err = NULL;
    bool alive = false;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    if (EXPECT_FAIL(psr_pool_is_alive(pool, &alive, &err), PSR_RESULT_FAULT)) {
        CHECK(psr_error_fault_code(err) == 2150858767u);
    }
    psr_error_free(err);
    close_pool(pool);
}

/* A Get whose connection drops (pypsrp injected a ConnectionError) is sent once more on a new
 * connection (a Get may run twice). The recorded client stopped there, so the replay has no
 * answer for the second Get (a fault) nor for the Delete at close (the driver expects both as
 * the unexpected requests). */
static void psrp_is_alive_http_error(psr_client *client) {
    psr_error *err = NULL;
    bool alive = false;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    if (EXPECT_OK(psr_pool_is_alive(pool, &alive, &err))) {
        CHECK(alive);
    }
    EXPECT_FAIL(psr_pool_is_alive(pool, &alive, &err), PSR_RESULT_FAULT);
    psr_error_free(err);
    err = NULL;
    (void)psr_pool_close(pool, &err); /* the replay server has no answer for it */
    psr_error_free(err);
    psr_pool_free(pool);
}

/* The recorded client received for a CommandId the server never had: attaching to a pipeline by
 * that id, whose Receive gets Windows' InvalidSelectors fault, reported as NOT_FOUND (and no
 * Signal follows for a command the server does not know). */
static void psrp_receive_failure(psr_client *client) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_pool *pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    if (EXPECT_OK(psr_pool_attach_pipeline(pool, "D1BF48DA-B26C-4F4A-BE52-B382AC20DD1F", &pl, &err))) {
        psr_invocation *inv = NULL;
        CHECK(same_id(psr_pipeline_id(pl), "D1BF48DA-B26C-4F4A-BE52-B382AC20DD1F"));
        if (EXPECT_FAIL(psr_pipeline_wait(pl, NULL, WAIT_MS, &inv, &err), PSR_RESULT_NOT_FOUND)) {
            CHECK(psr_error_fault_code(err) == 2150858843u);
        }
        CHECK(inv == NULL);
        psr_error_free(err);
        psr_pipeline_free(pl);
    }
    close_pool(pool);
}

/* ------------------------------------------------------------------------------------------ */
/* cmd shells (WinRS)                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* The recordings' shells: pypsrp sent no WINRS_CODEPAGE, where psremote asks for UTF-8 by default. */
static psr_cmd_shell_options *as_recorded(void) {
    psr_error *err = NULL;
    psr_cmd_shell_options *o = psr_cmd_shell_options_new();
    if (CHECK(o != NULL)) {
        EXPECT_OK(psr_cmd_shell_options_set_codepage(o, 0, &err));
    }
    return o;
}

static psr_cmd_shell *open_shell(psr_client *client, const psr_cmd_shell_options *o) {
    psr_error *err = NULL;
    psr_cmd_shell *shell = NULL;
    if (!EXPECT_OK(psr_client_cmd_shell_open(client, o, &shell, &err))) {
        return NULL;
    }
    return shell;
}

static void close_shell(psr_cmd_shell *shell) {
    psr_error *err = NULL;
    EXPECT_OK(psr_cmd_shell_close(shell, &err));
    psr_cmd_shell_free(shell);
}

/* Starts `exe args...` in `shell` and waits for it; NULL (and a failed check) when it could not. */
static psr_cmd_result *run_in(psr_cmd_shell *shell, const char *exe, const char *const *args, size_t nargs,
                              bool skip_cmd_shell) {
    psr_error *err = NULL;
    psr_cmd_process *p = NULL;
    psr_cmd_result *r = NULL;
    if (!EXPECT_OK(psr_cmd_shell_start(shell, exe, args, nargs, skip_cmd_shell, &p, &err))) {
        return NULL;
    }
    if (!EXPECT_OK(psr_cmd_process_wait(p, WAIT_MS, &r, &err))) {
        r = NULL;
    }
    psr_cmd_process_free(p);
    return r;
}

/* pypsrp's Client.execute_cmd twice: a shell of its own for "dir", then for "echo abc". */
static void client_execute_cmd(psr_client *client) {
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell;
    psr_cmd_result *r;
    size_t len;
    const uint8_t *data;

    shell = open_shell(client, o);
    if (shell != NULL) {
        r = run_in(shell, "dir", NULL, 0, false);
        if (r != NULL) {
            char *text;
            data = psr_cmd_result_stdout(r, &len);
            text = (char *)malloc(len + 1);
            if (CHECK(text != NULL)) {
                memcpy(text, data, len);
                text[len] = '\0';
                CHECK(contains(text, " Directory of C:\\Users\\vagrant\r\n"));
                free(text);
            }
            data = psr_cmd_result_stderr(r, &len);
            CHECK(bytes_are(data, len, ""));
            CHECK(psr_cmd_result_exit_code(r) == 0);
        }
        psr_cmd_result_free(r);
        close_shell(shell);
    }
    shell = open_shell(client, o);
    if (shell != NULL) {
        r = run_in(shell, "echo abc", NULL, 0, false);
        if (r != NULL) {
            data = psr_cmd_result_stdout(r, &len);
            CHECK(bytes_are(data, len, "abc\r\n"));
            data = psr_cmd_result_stderr(r, &len);
            CHECK(bytes_are(data, len, ""));
            CHECK(psr_cmd_result_exit_code(r) == 0);
        }
        psr_cmd_result_free(r);
        close_shell(shell);
    }
    psr_cmd_shell_options_free(o);
}

/* pypsrp's Client.execute_cmd with environment variables, names with spaces and quotes among them. */
static void client_execute_cmd_environment(psr_client *client) {
    static const char *const env[][2] = {
        {"string", "string value"},     {"int", "1234"},
        {"bool", "True"},               {"double_quote", "double \" quote"},
        {"single_quote", "single ' quote"}, {"hyphen - var", "abc @ 123"},
    };
    psr_error *err = NULL;
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell;
    psr_cmd_result *r;
    size_t i;
    for (i = 0; i < sizeof env / sizeof env[0]; i++) {
        EXPECT_OK(psr_cmd_shell_options_add_environment(o, env[i][0], env[i][1], &err));
    }
    shell = open_shell(client, o);
    psr_cmd_shell_options_free(o);
    if (shell == NULL) {
        return;
    }
    r = run_in(shell, "set", NULL, 0, false);
    if (r != NULL) {
        size_t len;
        const uint8_t *data = psr_cmd_result_stdout(r, &len);
        char *text = (char *)malloc(len + 2);
        char line[128];
        if (CHECK(text != NULL)) {
            text[0] = '\n';
            memcpy(text + 1, data, len);
            text[len + 1] = '\0';
            for (i = 0; i < sizeof env / sizeof env[0]; i++) {
                snprintf(line, sizeof line, "\n%s=%s\r\n", env[i][0], env[i][1]);
                if (!CHECK(contains(text, line))) {
                    printf("       no line %s=%s\n", env[i][0], env[i][1]);
                }
            }
            free(text);
        }
        CHECK(psr_cmd_result_exit_code(r) == 0);
    }
    psr_cmd_result_free(r);
    close_shell(shell);
}

/* pypsrp opened the same WinRS object twice; only the first open reaches the server, whose id
 * (the recorded one, as cmd shells take the server's) the shell reports. */
static void winrs_open_already_opened(psr_client *client) {
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell = open_shell(client, o);
    psr_cmd_shell_options_free(o);
    if (shell == NULL) {
        return;
    }
    EXPECT_STR(psr_cmd_shell_id(shell), "ED7FD87E-E041-4BC2-A22F-B58FF7833094");
    close_shell(shell);
}

/* cmd.exe /c echo hi, read chunk by chunk. */
static void winrs_standard(psr_client *client) {
    static const char *const args[] = {"/c", "echo", "hi"};
    psr_error *err = NULL;
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell = open_shell(client, o);
    psr_cmd_process *p = NULL;
    char out[64];
    size_t used = 0;
    int chunks = 0;
    psr_cmd_shell_options_free(o);
    if (shell == NULL) {
        return;
    }
    if (EXPECT_OK(psr_cmd_shell_start(shell, "cmd.exe", args, 3, false, &p, &err))) {
        for (;;) {
            psr_cmd_chunk *c = NULL;
            size_t len = 0;
            const uint8_t *data;
            if (!EXPECT_OK(psr_cmd_process_read(p, WAIT_MS, &c, &err)) || c == NULL) {
                break;
            }
            chunks++;
            data = psr_cmd_chunk_data(c, &len);
            CHECK(psr_cmd_chunk_stream(c) == PSR_CMD_STREAM_STDOUT);
            if (used + len < sizeof out) {
                memcpy(out + used, data, len);
                used += len;
            }
            psr_cmd_chunk_free(c);
        }
        CHECK(chunks >= 1);
        CHECK(bytes_are((const uint8_t *)out, used, "hi\r\n"));
        {
            int64_t code = -1;
            CHECK(psr_cmd_process_exit_code(p, &code));
            CHECK(code == 0);
        }
        psr_cmd_process_free(p);
    }
    close_shell(shell);
}

/* Environment variables, special characters included, seen by `set`. */
static void winrs_environment(psr_client *client) {
    static const char *const args[] = {"/c", "set"};
    static const char special[] = "_-(){}[]<>*+-/\\?\"!@#$^&|;:i,.`~0";
    psr_error *err = NULL;
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell;
    psr_cmd_result *r;
    EXPECT_OK(psr_cmd_shell_options_add_environment(o, "env1", "var1", &err));
    EXPECT_OK(psr_cmd_shell_options_add_environment(o, "1234", "5678", &err));
    EXPECT_OK(psr_cmd_shell_options_add_environment(o, special, special, &err));
    shell = open_shell(client, o);
    psr_cmd_shell_options_free(o);
    if (shell == NULL) {
        return;
    }
    r = run_in(shell, "cmd.exe", args, 2, false);
    if (r != NULL) {
        size_t len;
        const uint8_t *data = psr_cmd_result_stdout(r, &len);
        char *text = (char *)malloc(len + 3);
        char line[128];
        if (CHECK(text != NULL)) {
            /* Each line whole: "\r\n" before and after. */
            text[0] = '\n';
            memcpy(text + 1, data, len);
            text[len + 1] = '\0';
            CHECK(contains(text, "\nenv1=var1\r\n"));
            CHECK(contains(text, "\n1234=5678\r\n"));
            snprintf(line, sizeof line, "\n%s=%s\r\n", special, special);
            CHECK(contains(text, line));
            free(text);
        }
        CHECK(psr_cmd_result_exit_code(r) == 0);
    }
    psr_cmd_result_free(r);
    close_shell(shell);
}

/* A shell without the user profile (WINRS_NOPROFILE): the default profile's directory. */
static void winrs_noprofile(psr_client *client) {
    static const char *const args[] = {"/c", "set"};
    psr_error *err = NULL;
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell;
    psr_cmd_result *r;
    EXPECT_OK(psr_cmd_shell_options_set_no_profile(o, true, &err));
    shell = open_shell(client, o);
    psr_cmd_shell_options_free(o);
    if (shell == NULL) {
        return;
    }
    r = run_in(shell, "cmd.exe", args, 2, false);
    if (r != NULL) {
        size_t len;
        const uint8_t *data = psr_cmd_result_stdout(r, &len);
        char *text = (char *)malloc(len + 1);
        if (CHECK(text != NULL)) {
            memcpy(text, data, len);
            text[len] = '\0';
            CHECK(contains(text, "USERPROFILE=C:\\Users\\Default\r\n"));
            free(text);
        }
        CHECK(psr_cmd_result_exit_code(r) == 0);
    }
    psr_cmd_result_free(r);
    close_shell(shell);
}

/* stdin in two Sends, the second closing it: powershell.exe - reads both lines. */
static void winrs_send(psr_client *client) {
    static const char *const args[] = {"-"};
    static const char first[] = "Write-Host \"output 1\";";
    static const char second[] = "Write-Host \"output 2\";";
    psr_error *err = NULL;
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell = open_shell(client, o);
    psr_cmd_process *p = NULL;
    psr_cmd_shell_options_free(o);
    if (shell == NULL) {
        return;
    }
    if (EXPECT_OK(psr_cmd_shell_start(shell, "powershell.exe", args, 1, false, &p, &err))) {
        psr_cmd_result *r = NULL;
        EXPECT_OK(psr_cmd_process_send_stdin(p, (const uint8_t *)first, strlen(first), false, &err));
        EXPECT_OK(psr_cmd_process_send_stdin(p, (const uint8_t *)second, strlen(second), true, &err));
        if (EXPECT_OK(psr_cmd_process_wait(p, WAIT_MS, &r, &err))) {
            size_t len;
            const uint8_t *data = psr_cmd_result_stdout(r, &len);
            CHECK(bytes_are(data, len, "output 1\noutput 2\n"));
            CHECK(psr_cmd_result_exit_code(r) == 0);
            psr_cmd_result_free(r);
        }
        psr_cmd_process_free(p);
    }
    close_shell(shell);
}

/* Programs started without cmd.exe (WINRS_SKIP_CMD_SHELL): one the server cannot find fails with
 * its fault code, the full path runs. */
static void winrs_no_cmd_shell(psr_client *client) {
    static const char *const args[] = {"Write-Host", "hi"};
    psr_error *err = NULL;
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell = open_shell(client, o);
    psr_cmd_process *p = NULL;
    psr_cmd_result *r;
    psr_cmd_shell_options_free(o);
    if (shell == NULL) {
        return;
    }
    if (EXPECT_FAIL(psr_cmd_shell_start(shell, "powershell.exe", args, 2, true, &p, &err), PSR_RESULT_FAULT)) {
        CHECK(psr_error_fault_code(err) == 2147942402u);
        CHECK(contains(psr_error_message(err), "The system cannot find the file specified"));
        CHECK(p == NULL);
    }
    psr_error_free(err);
    err = NULL;
    r = run_in(shell, "C:\\Windows\\system32\\WindowsPowerShell\\v1.0\\powershell.exe", args, 2, true);
    if (r != NULL) {
        size_t len;
        const uint8_t *data = psr_cmd_result_stdout(r, &len);
        CHECK(bytes_are(data, len, "hi\n"));
    }
    psr_cmd_result_free(r);
    close_shell(shell);
}

/* ------------------------------------------------------------------------------------------ */
/* Files: copy and fetch                                                                       */
/* ------------------------------------------------------------------------------------------ */
/* The recorded client ran pypsrp's scripts, psremote runs its own: the driver starts the
 * replay server with --ignore-script-text (arguments, input and the other flags still must
 * match). Windows' answers keep to the contract of psremote's scripts: data chunks, then the
 * hash; the path as the last output. */

/* SHA-1 (FIPS 180-4), the hash both ends of a transfer compare: here it checks that the bytes
 * on this side are the recorded file. */
typedef struct {
    uint32_t h[5];
    uint64_t length;
    uint8_t block[64];
    size_t used;
} sha1_ctx;

static uint32_t rotl32(uint32_t x, int n) {
    return (x << n) | (x >> (32 - n));
}

static void sha1_compress(sha1_ctx *c) {
    uint32_t w[80], a, b, x, d, e, f, k, t;
    int i;
    for (i = 0; i < 16; i++) {
        const uint8_t *p = c->block + 4 * i;
        w[i] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
    }
    for (i = 16; i < 80; i++) {
        w[i] = rotl32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    }
    a = c->h[0];
    b = c->h[1];
    x = c->h[2];
    d = c->h[3];
    e = c->h[4];
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & x) | (~b & d);
            k = 0x5A827999u;
        } else if (i < 40) {
            f = b ^ x ^ d;
            k = 0x6ED9EBA1u;
        } else if (i < 60) {
            f = (b & x) | (b & d) | (x & d);
            k = 0x8F1BBCDCu;
        } else {
            f = b ^ x ^ d;
            k = 0xCA62C1D6u;
        }
        t = rotl32(a, 5) + f + e + k + w[i];
        e = d;
        d = x;
        x = rotl32(b, 30);
        b = a;
        a = t;
    }
    c->h[0] += a;
    c->h[1] += b;
    c->h[2] += x;
    c->h[3] += d;
    c->h[4] += e;
}

static void sha1_update(sha1_ctx *c, const uint8_t *data, size_t n) {
    while (n > 0) {
        size_t take = sizeof c->block - c->used;
        if (take > n) {
            take = n;
        }
        memcpy(c->block + c->used, data, take);
        c->used += take;
        c->length += take;
        data += take;
        n -= take;
        if (c->used == sizeof c->block) {
            sha1_compress(c);
            c->used = 0;
        }
    }
}

/* The SHA-1 of `len` bytes as 40 lowercase hex digits (and a NUL) in `out`. */
static void sha1_hex(const uint8_t *data, size_t len, char out[41]) {
    static const uint8_t pad = 0x80, zero = 0;
    sha1_ctx c;
    uint8_t bits[8];
    uint64_t nbits;
    int i;
    memset(&c, 0, sizeof c);
    c.h[0] = 0x67452301u;
    c.h[1] = 0xEFCDAB89u;
    c.h[2] = 0x98BADCFEu;
    c.h[3] = 0x10325476u;
    c.h[4] = 0xC3D2E1F0u;
    sha1_update(&c, data, len);
    nbits = c.length * 8u;
    sha1_update(&c, &pad, 1);
    while (c.used != 56) {
        sha1_update(&c, &zero, 1);
    }
    for (i = 0; i < 8; i++) {
        bits[i] = (uint8_t)(nbits >> (56 - 8 * i));
    }
    sha1_update(&c, bits, 8);
    for (i = 0; i < 5; i++) {
        snprintf(out + 8 * i, 9, "%08lx", (unsigned long)c.h[i]);
    }
}

/* A fresh folder under /tmp for one scenario's local files, and a path in it. */
typedef struct {
    char dir[64];
    char file[128];
} scratch;

static int scratch_new(scratch *s, const char *name) {
    snprintf(s->dir, sizeof s->dir, "/tmp/psr-c-replay-XXXXXX");
    if (!CHECK(mkdtemp(s->dir) != NULL)) {
        return 0;
    }
    snprintf(s->file, sizeof s->file, "%s/%s", s->dir, name);
    return 1;
}

/* The names in the scratch folder (besides . and ..), space-separated, in `out`; their count. */
static int scratch_entries(const scratch *s, char *out, size_t size) {
    DIR *d = opendir(s->dir);
    struct dirent *e;
    int n = 0;
    out[0] = '\0';
    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            size_t used = strlen(out);
            snprintf(out + used, size - used, "%s%s", n > 0 ? " " : "", e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

/* Removes the scratch folder and whatever is in it. */
static void scratch_free(scratch *s) {
    DIR *d = opendir(s->dir);
    struct dirent *e;
    char path[sizeof s->dir + sizeof e->d_name + 1];
    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
                remove(path);
            }
        }
        closedir(d);
    }
    CHECK(rmdir(s->dir) == 0);
}

static int write_bytes(const char *path, const uint8_t *data, size_t len) {
    FILE *f = fopen(path, "wb");
    int ok;
    if (f == NULL) {
        return 0;
    }
    ok = len == 0 || fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* The local file holds exactly `want` (`len` bytes), whose SHA-1 is `sha1`. */
static void expect_file_at(const char *path, const uint8_t *want, size_t len, const char *sha1, const char *file,
                           int line) {
    FILE *f = fopen(path, "rb");
    uint8_t *got = (uint8_t *)malloc(len + 1);
    size_t n = 0;
    char hex[41];
    char what[256];
    if (f != NULL && got != NULL) {
        n = fread(got, 1, len + 1, f);
    }
    snprintf(what, sizeof what, "%s holds the %lu recorded bytes", path, (unsigned long)len);
    check_at(f != NULL && got != NULL && n == len && (len == 0 || memcmp(got, want, len) == 0), what, file, line);
    if (f != NULL && got != NULL) {
        sha1_hex(got, n, hex);
        snprintf(what, sizeof what, "sha1(%s) == %s (got %s)", path, sha1, hex);
        check_at(strcmp(hex, sha1) == 0, what, file, line);
    }
    if (f != NULL) {
        fclose(f);
    }
    free(got);
}

#define EXPECT_FILE(path, want, len, sha1) expect_file_at((path), (want), (len), (sha1), __FILE__, __LINE__)

static const uint8_t AZ[] = "abcdefghijklmnopqrstuvwxyz";
static const size_t AZ_LEN = 26;
static const char *const AZ_SHA1 = "32d10c7b8cf96570ca04ce37f2a19d84240d3a89";
static const char *const DOMAIN_DEST = "C:\\Users\\vagrant-domain\\Documents\\test_file";

/* The recorded client's options: the remote path verbatim (pypsrp's tests did not expand it). */
static psr_transfer_options *as_recorded_transfer(void) {
    psr_error *err = NULL;
    psr_transfer_options *o = psr_transfer_options_new();
    if (CHECK(o != NULL)) {
        EXPECT_OK(psr_transfer_options_set_expand_variables(o, 0, &err));
    }
    return o;
}

/* Progress calls of one transfer (psremote's worker thread, one call at a time). */
#define MAX_PROGRESS 16

typedef struct {
    int calls;
    uint64_t done[MAX_PROGRESS];
    int64_t total[MAX_PROGRESS];
    uint64_t last_done;
} transfer_seen;

static int32_t on_transfer(void *userdata, uint64_t done, int64_t total) {
    transfer_seen *t = (transfer_seen *)userdata;
    if (t->calls < MAX_PROGRESS) {
        t->done[t->calls] = done;
        t->total[t->calls] = total;
    }
    t->last_done = done;
    t->calls++;
    return 0;
}

/* pypsrp's tests checked the copied file through cmd shells: Get-Content shows it, Remove-Item
 * removes it. */
static void check_through_cmd(psr_client *client, const char *expected_stdout) {
    char line[160];
    psr_cmd_shell_options *o = as_recorded();
    psr_cmd_shell *shell = open_shell(client, o);
    psr_cmd_result *r;
    size_t len;
    const uint8_t *data;
    if (shell != NULL) {
        snprintf(line, sizeof line, "powershell.exe Get-Content %s", DOMAIN_DEST);
        r = run_in(shell, line, NULL, 0, false);
        if (r != NULL) {
            data = psr_cmd_result_stdout(r, &len);
            CHECK(bytes_are(data, len, expected_stdout));
            CHECK(psr_cmd_result_exit_code(r) == 0);
        }
        psr_cmd_result_free(r);
        close_shell(shell);
    }
    shell = open_shell(client, o);
    if (shell != NULL) {
        snprintf(line, sizeof line, "powershell Remove-Item -Path '%s'", DOMAIN_DEST);
        r = run_in(shell, line, NULL, 0, false);
        if (r != NULL) {
            CHECK(psr_cmd_result_exit_code(r) == 0);
        }
        psr_cmd_result_free(r);
        close_shell(shell);
    }
    psr_cmd_shell_options_free(o);
}

/* A 26-byte file copied to a relative path (the server puts it in the user's Documents), then
 * again to the absolute path the first copy reported; the cmd shells' checks. */
static void client_copy_file(psr_client *client) {
    psr_error *err = NULL;
    psr_transfer_options *o = as_recorded_transfer();
    char *remote = NULL;
    scratch s;
    if (scratch_new(&s, "copy_file")) {
        if (CHECK(write_bytes(s.file, AZ, AZ_LEN)) &&
            EXPECT_OK(psr_client_copy(client, s.file, "test_file", o, NULL, NULL, &remote, &err))) {
            char *second = NULL;
            EXPECT_STR(remote, DOMAIN_DEST);
            if (EXPECT_OK(psr_client_copy(client, s.file, remote, o, NULL, NULL, &second, &err))) {
                EXPECT_STR(second, DOMAIN_DEST);
                psr_string_free(second);
            }
            psr_string_free(remote);
            /* What the server checked against the recorded hash is the file, unchanged. */
            EXPECT_FILE(s.file, AZ, AZ_LEN, AZ_SHA1);
            check_through_cmd(client, "abcdefghijklmnopqrstuvwxyz\r\n");
        }
        scratch_free(&s);
    }
    psr_transfer_options_free(o);
}

/* An empty file: no data, the empty file's hash; Get-Content shows nothing. */
static void client_copy_file_empty(psr_client *client) {
    psr_error *err = NULL;
    psr_transfer_options *o = as_recorded_transfer();
    char *remote = NULL;
    scratch s;
    if (scratch_new(&s, "copy_empty")) {
        if (CHECK(write_bytes(s.file, AZ, 0)) &&
            EXPECT_OK(psr_client_copy(client, s.file, "test_file", o, NULL, NULL, &remote, &err))) {
            EXPECT_STR(remote, DOMAIN_DEST);
            psr_string_free(remote);
            EXPECT_FILE(s.file, AZ, 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
            check_through_cmd(client, "");
        }
        scratch_free(&s);
    }
    psr_transfer_options_free(o);
}

/* 520000 bytes in the recording's chunks of 85404 (pypsrp with its payload size mocked): six
 * whole chunks and a short one, a progress call after each. */
static void client_copy_file_really_large(psr_client *client) {
    psr_error *err = NULL;
    psr_transfer_options *o = as_recorded_transfer();
    char *remote = NULL;
    const size_t size = 20000 * AZ_LEN;
    uint8_t *data = (uint8_t *)malloc(size);
    transfer_seen t;
    scratch s;
    size_t i;
    memset(&t, 0, sizeof t);
    if (CHECK(data != NULL) && CHECK(o != NULL) && scratch_new(&s, "copy_large")) {
        for (i = 0; i < size; i += AZ_LEN) {
            memcpy(data + i, AZ, AZ_LEN);
        }
        EXPECT_OK(psr_transfer_options_set_chunk_size(o, 85404, &err));
        if (CHECK(write_bytes(s.file, data, size)) &&
            EXPECT_OK(psr_client_copy(client, s.file, "test_file", o, on_transfer, &t, &remote, &err))) {
            EXPECT_STR(remote, "C:\\Users\\vagrant\\Documents\\test_file");
            psr_string_free(remote);
            EXPECT_FILE(s.file, data, size, "9019309673c06b632baeb9c84c1cc64b8de74f70");
            if (CHECK(t.calls == 7)) {
                for (i = 0; i < 7; i++) {
                    uint64_t want = i < 6 ? (uint64_t)(i + 1) * 85404u : (uint64_t)size;
                    if (!CHECK(t.done[i] == want && t.total[i] == (int64_t)size)) {
                        printf("       progress call %lu: %lu of %ld\n", (unsigned long)i, (unsigned long)t.done[i],
                               (long)t.total[i]);
                    }
                }
            }
        }
        scratch_free(&s);
    }
    free(data);
    psr_transfer_options_free(o);
}

/* Windows refused the copy: the recorded client had a mocked hash, so Windows' answer is a hash
 * mismatch. psremote sends the true hash (the one difference from the recording, which the
 * driver expects) and gets the recorded failure as a typed file error of the remote side. */
static void client_copy_file_failure(psr_client *client) {
    psr_error *err = NULL;
    psr_transfer_options *o = as_recorded_transfer();
    char *remote = NULL;
    scratch s;
    if (scratch_new(&s, "copy_failure")) {
        if (CHECK(write_bytes(s.file, AZ, AZ_LEN)) &&
            EXPECT_FAIL(psr_client_copy(client, s.file, "test_file", o, NULL, NULL, &remote, &err), PSR_RESULT_FILE)) {
            const char *msg = psr_error_message(err);
            EXPECT_STR(psr_error_file_kind(err), "HashMismatch");
            EXPECT_STR(psr_error_file_side(err), "remote");
            EXPECT_STR(psr_error_file_path(err), "test_file");
            if (!CHECK(contains(msg, "hash mismatch") &&
                       contains(msg, "expected sha1 c3499c2729730a7f807efb8676a92dcb6f8a3f8f, got "
                                     "32d10c7b8cf96570ca04ce37f2a19d84240d3a89"))) {
                printf("       message: %s\n", msg != NULL ? msg : "(NULL)");
            }
            CHECK(remote == NULL);
        }
        psr_error_free(err);
        EXPECT_FILE(s.file, AZ, AZ_LEN, AZ_SHA1);
        scratch_free(&s);
    }
    psr_transfer_options_free(o);
}

/* A 250002-byte file fetched in the server's chunks: the file here holds the recorded bytes
 * (their SHA-1 the one the server sent), no .part file is left beside it. */
static void client_fetch_file(psr_client *client) {
    psr_error *err = NULL;
    psr_transfer_options *o = as_recorded_transfer();
    char *local = NULL;
    const size_t size = 50000 * 5 + 2;
    uint8_t *want = (uint8_t *)malloc(size);
    transfer_seen t;
    char names[256];
    scratch s;
    size_t i;
    memset(&t, 0, sizeof t);
    if (CHECK(want != NULL) && scratch_new(&s, "file.txt")) {
        for (i = 0; i + 2 < size; i += 5) {
            memcpy(want + i, "abc\r\n", 5);
        }
        memcpy(want + size - 2, "\r\n", 2);
        if (EXPECT_OK(psr_client_fetch(client, "C:\\temp\\file.txt", s.file, o, on_transfer, &t, &local, &err))) {
            EXPECT_STR(local, s.file);
            psr_string_free(local);
            EXPECT_FILE(s.file, want, size, "70e3bea8cdb0d0c883bccff5228933d933b88a80");
            CHECK(t.calls >= 1 && t.last_done == size);
        }
        CHECK(scratch_entries(&s, names, sizeof names) == 1);
        EXPECT_STR(names, "file.txt");
        scratch_free(&s);
    }
    free(want);
    psr_transfer_options_free(o);
}

/* The default options: %TEMP% travels unexpanded and the server expands it. */
static void client_fetch_file_expand_vars(psr_client *client) {
    psr_error *err = NULL;
    char *local = NULL;
    scratch s;
    if (scratch_new(&s, "file.txt")) {
        if (EXPECT_OK(psr_client_fetch(client, "%TEMP%\\file.txt", s.file, NULL, NULL, NULL, &local, &err))) {
            EXPECT_STR(local, s.file);
            psr_string_free(local);
            EXPECT_FILE(s.file, (const uint8_t *)"abc\r\n\r\n", 7, "22c1a78ec5ada1cd2f3665b58b30499e51a3b029");
        }
        scratch_free(&s);
    }
}

/* A fetch Windows refused: a typed file error of the remote side naming the path, the server's
 * text in the message, nothing written here. */
static void fetch_failure(psr_client *client, const char *src, const char *kind, const char *text) {
    psr_error *err = NULL;
    psr_transfer_options *o = as_recorded_transfer();
    char *local = NULL;
    char names[256];
    scratch s;
    if (scratch_new(&s, "file.txt")) {
        if (EXPECT_FAIL(psr_client_fetch(client, src, s.file, o, NULL, NULL, &local, &err), PSR_RESULT_FILE)) {
            const char *msg = psr_error_message(err);
            EXPECT_STR(psr_error_file_kind(err), kind);
            EXPECT_STR(psr_error_file_side(err), "remote");
            EXPECT_STR(psr_error_file_path(err), src);
            if (!CHECK(contains(msg, text))) {
                printf("       message: %s\n", msg != NULL ? msg : "(NULL)");
            }
            CHECK(local == NULL);
        }
        psr_error_free(err);
        if (!CHECK(scratch_entries(&s, names, sizeof names) == 0)) {
            printf("       left behind: %s\n", names);
        }
        scratch_free(&s);
    }
    psr_transfer_options_free(o);
}

static void client_fetch_file_fail_dir(psr_client *client) {
    fetch_failure(client, "C:\\Windows", "IsADirectory", "The path at 'C:\\Windows' is a directory, src must be a file");
}

static void client_fetch_file_fail_missing(psr_client *client) {
    fetch_failure(client, "C:\\fakefile.txt", "NotFound", "The path at 'C:\\fakefile.txt' does not exist");
}

/* ------------------------------------------------------------------------------------------ */
/* The server's configuration (WS-Man transfer Get of winrm/config)                            */
/* ------------------------------------------------------------------------------------------ */

/* pypsrp's update_max_envelope_size: one Get of winrm/config; its MaxEnvelopeSizekb (150) sizes
 * the client's later requests. */
static void wsman_update_envelope_size_150(psr_client *client) {
    psr_error *err = NULL;
    uint32_t size = 0;
    if (EXPECT_OK(psr_client_fit_envelope_to_server(client, &size, &err))) {
        CHECK(size == 150u * 1024u);
    }
}

/* The same Get (MaxEnvelopeSizekb 500) read as JSON: the limits and every entry. */
static void wsman_server_config_500(psr_client *client) {
    psr_error *err = NULL;
    char *json = NULL;
    if (EXPECT_OK(psr_client_server_config_json(client, &json, &err))) {
        CHECK(contains(json, "\"max_envelope_size_kb\":500"));
        CHECK(contains(json, "\"max_timeout_ms\":60000"));
        CHECK(contains(json, "\"max_batch_items\":32000"));
        CHECK(contains(json, "\"shell_idle_timeout_ms\":7200000"));
        CHECK(contains(json, "\"max_shells_per_user\":2147483647"));
        CHECK(contains(json, "\"max_memory_per_shell_mb\":2147483647"));
        CHECK(contains(json, "\"max_concurrent_operations_per_user\":1500"));
        CHECK(contains(json, "\"MaxEnvelopeSizekb\":\"500\""));
        CHECK(contains(json, "\"Service/AllowUnencrypted\":\"false\""));
        CHECK(contains(json, "\"Client/DefaultPorts/HTTPS\":\"5986\""));
        if (g_failed) {
            printf("       %s\n", json);
        }
        psr_string_free(json);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Main                                                                                        */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    void (*run)(psr_client *client);
} scenario;

static const scenario SCENARIOS[] = {
    {"psrp_open_runspace", psrp_open_runspace},
    {"psrp_multiple_invocations", psrp_multiple_invocations},
    {"psrp_clear_commands", psrp_clear_commands},
    {"psrp_error_failed", psrp_error_failed},
    {"psrp_stream_output_invocation", psrp_stream_output_invocation},
    {"psrp_with_input", psrp_with_input},
    {"psrp_pshost_methods", psrp_pshost_methods},
    {"psrp_disconnect_runspaces", psrp_disconnect_runspaces},
    {"psrp_is_alive_invalid_selectors", psrp_is_alive_invalid_selectors},
    {"psrp_is_alive_other_wsman_error", psrp_is_alive_other_wsman_error},
    {"psrp_is_alive_http_error", psrp_is_alive_http_error},
    {"psrp_receive_failure", psrp_receive_failure},
    {"client_execute_cmd", client_execute_cmd},
    {"client_execute_cmd_environment", client_execute_cmd_environment},
    {"winrs_open_already_opened", winrs_open_already_opened},
    {"winrs_standard", winrs_standard},
    {"winrs_environment", winrs_environment},
    {"winrs_noprofile", winrs_noprofile},
    {"winrs_send", winrs_send},
    {"winrs_no_cmd_shell", winrs_no_cmd_shell},
    {"client_copy_file", client_copy_file},
    {"client_copy_file_empty", client_copy_file_empty},
    {"client_copy_file_really_large", client_copy_file_really_large},
    {"client_copy_file_failure", client_copy_file_failure},
    {"client_fetch_file", client_fetch_file},
    {"client_fetch_file_expand_vars", client_fetch_file_expand_vars},
    {"client_fetch_file_fail_dir", client_fetch_file_fail_dir},
    {"client_fetch_file_fail_missing", client_fetch_file_fail_missing},
    {"wsman_update_envelope_size_150", wsman_update_envelope_size_150},
    {"wsman_server_config_500", wsman_server_config_500},
};

int main(int argc, char **argv) {
    size_t i;
    const scenario *chosen = NULL;
    const char *v = getenv("PSR_TEST_VERBOSE");
    g_verbose = v != NULL && v[0] == '1';
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++) {
            printf("%s\n", SCENARIOS[i].name);
        }
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s SCENARIO URL | --list\n", argv[0]);
        return 2;
    }
    g_test = argv[1];
    g_url = argv[2];
    for (i = 0; i < sizeof SCENARIOS / sizeof SCENARIOS[0]; i++) {
        if (strcmp(SCENARIOS[i].name, argv[1]) == 0) {
            chosen = &SCENARIOS[i];
        }
    }
    printf("scenario %s\n", g_test);
    if (CHECK(chosen != NULL)) {
        psr_client *client = connect_client();
        if (client != NULL) {
            chosen->run(client);
            psr_client_free(client);
        }
    }
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
