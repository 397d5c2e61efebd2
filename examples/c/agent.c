/*
 * agent: runs a PowerShell pipeline on a remote host through libpsremote and streams what it
 * writes.
 *
 *   PSREMOTE_URL=http://host:5985/wsman PSREMOTE_USER='DOMAIN\user' PSREMOTE_PASSWORD=... \
 *     PSREMOTE_TRUSTED_HOSTS=host ./agent "Get-Process | Select-Object -First 3"
 *
 * NTLM proves the user but not the server, so over http the host must be named in
 * PSREMOTE_TRUSTED_HOSTS (WinRM's TrustedHosts: names, addresses, wildcards); over https
 * (PSREMOTE_URL=https://host:5986/wsman, PSREMOTE_CA_FILE for a private CA) a certificate that
 * verifies is enough.
 *
 * Output objects go to stdout, one per line (strings as plain text, anything else as JSON);
 * errors, warnings, verbose, debug and information records and progress go to stderr.
 * Read-Host and Get-Credential on the remote side are answered from this process's stdin.
 * Ctrl-C stops the remote pipeline (from a signal-handling thread).
 *
 * Exit status: 0 when the pipeline completed, 1 when it failed or was stopped, 2 for usage or
 * connection errors.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <psremote.h>

static void usage(void) {
    fprintf(stderr,
            "usage: agent [-c configuration] [-a negotiate|ntlm|basic|...] [-u] [-t timeout_ms] [-j] [-i] POWERSHELL...\n"
            "       agent -V\n"
            "  connection from PSREMOTE_URL, PSREMOTE_USER, PSREMOTE_PASSWORD; PSREMOTE_TRUSTED_HOSTS (comma\n"
            "  list of hosts towards which NTLM is accepted over http), PSREMOTE_CA_FILE (CA for https)\n"
            "  -c  session configuration (default Microsoft.PowerShell)\n"
            "  -a  authentication mechanism (default negotiate)\n"
            "  -u  allow unencrypted bodies (Basic over HTTP)\n"
            "  -t  stop the pipeline after this many milliseconds (default: no limit)\n"
            "  -j  print the whole result as JSON at the end\n"
            "  -i  print what the connection established (JSON) to stderr\n"
            "  -V  print the library's version and the header's, and exit\n");
}

/* Whether the library this program loaded is of the ABI series its header describes: before
 * 1.0 the same MAJOR.MINOR, from 1.0 on the same MAJOR. An installed library's SONAME
 * (libpsremote.so.<series>) already ensures it; this catches another release put in its place
 * (LD_LIBRARY_PATH, a copied file). */
static int abi_matches(void) {
    unsigned shift = PSR_VERSION_MAJOR == 0 ? 8 : 16;
    return (psr_version_number() >> shift) == ((uint32_t)PSR_VERSION_NUMBER >> shift);
}

/* Prints a library error and frees it. */
static void report(const char *what, psr_result rc, psr_error *err) {
    const char *msg = psr_error_message(err);
    fprintf(stderr, "agent: %s: %s: %s\n", what, psr_result_name(rc), msg != NULL ? msg : "(no details)");
    psr_error_free(err);
}

/* The value of four hex digits, or -1. */
static long hex4(const char *p) {
    long v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') {
            v |= c - '0';
        } else if (c >= 'a' && c <= 'f') {
            v |= c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            v |= c - 'A' + 10;
        } else {
            return -1;
        }
    }
    return v;
}

/* Writes a JSON string value as text (decoding escapes; \u escapes become UTF-8). Returns 0 when
 * `json` is not a plain string. */
static int print_json_string(FILE *f, const char *json) {
    const char *p = json;
    if (*p != '"') {
        return 0;
    }
    for (p++; *p != '\0' && *p != '"'; p++) {
        long cp;
        if (*p != '\\') {
            fputc(*p, f);
            continue;
        }
        p++;
        switch (*p) {
        case 'n': fputc('\n', f); continue;
        case 't': fputc('\t', f); continue;
        case 'r': fputc('\r', f); continue;
        case 'b': fputc('\b', f); continue;
        case 'f': fputc('\f', f); continue;
        case 'u': break;
        case '\0': return 1;
        default: fputc(*p, f); continue;
        }
        cp = hex4(p + 1);
        if (cp < 0) {
            return 1;
        }
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && p[1] == '\\' && p[2] == 'u') {
            long low = hex4(p + 3);
            if (low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
        }
        if (cp < 0x80) {
            fputc((int)cp, f);
        } else if (cp < 0x800) {
            fputc((int)(0xC0 | (cp >> 6)), f);
            fputc((int)(0x80 | (cp & 0x3F)), f);
        } else if (cp < 0x10000) {
            fputc((int)(0xE0 | (cp >> 12)), f);
            fputc((int)(0x80 | ((cp >> 6) & 0x3F)), f);
            fputc((int)(0x80 | (cp & 0x3F)), f);
        } else {
            fputc((int)(0xF0 | (cp >> 18)), f);
            fputc((int)(0x80 | ((cp >> 12) & 0x3F)), f);
            fputc((int)(0x80 | ((cp >> 6) & 0x3F)), f);
            fputc((int)(0x80 | (cp & 0x3F)), f);
        }
    }
    return 1;
}

/* --- streaming callbacks: run on the thread that calls psr_pipeline_wait (here: main) ------- */

static int32_t on_output(void *userdata, const char *json, const char *clixml) {
    (void)userdata;
    (void)clixml;
    if (!print_json_string(stdout, json)) {
        fputs(json, stdout);
    }
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

static int32_t on_record(void *userdata, psr_stream stream, const char *message) {
    const char *label = "INFO";
    (void)userdata;
    switch (stream) {
    case PSR_STREAM_ERROR: label = "ERROR"; break;
    case PSR_STREAM_WARNING: label = "WARNING"; break;
    case PSR_STREAM_VERBOSE: label = "VERBOSE"; break;
    case PSR_STREAM_DEBUG: label = "DEBUG"; break;
    case PSR_STREAM_INFORMATION: label = "INFO"; break;
    default: break;
    }
    fprintf(stderr, "%s: %s\n", label, message);
    return 0;
}

static int32_t on_progress(void *userdata, const char *activity, const char *status, int32_t percent) {
    (void)userdata;
    if (percent >= 0) {
        fprintf(stderr, "PROGRESS: %s: %s (%d%%)\n", activity, status, (int)percent);
    } else {
        fprintf(stderr, "PROGRESS: %s: %s\n", activity, status);
    }
    return 0;
}

/* --- host callbacks: run on a psremote worker thread, one at a time --------------------------- */

static int read_stdin_line(char *buf, size_t len) {
    size_t n;
    if (len == 0 || fgets(buf, (int)(len > INT32_MAX ? INT32_MAX : len), stdin) == NULL) {
        return -1;
    }
    n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        buf[--n] = '\0';
    }
    return 0;
}

static int32_t host_read_line(void *userdata, const char *prompt, char *buf, size_t buf_len) {
    (void)userdata;
    if (prompt != NULL && prompt[0] != '\0') {
        fprintf(stderr, "%s", prompt);
    }
    fprintf(stderr, "> ");
    return read_stdin_line(buf, buf_len) == 0 ? 0 : 1;
}

static int32_t host_credential(void *userdata, const char *caption, const char *message, char *user,
                               size_t user_len, char *password, size_t password_len) {
    (void)userdata;
    fprintf(stderr, "%s\n%s\nUser: ", caption, message);
    if (read_stdin_line(user, user_len) != 0) {
        return 1;
    }
    fprintf(stderr, "Password: ");
    return read_stdin_line(password, password_len) == 0 ? 0 : 1;
}

/* --- Ctrl-C: a thread waits for the signal and stops the running pipeline -------------------- */

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static psr_pipeline *g_running; /* guarded by g_lock */
static int g_quit;              /* guarded by g_lock */

static void *signal_thread(void *arg) {
    sigset_t *set = (sigset_t *)arg;
    for (;;) {
        int sig = 0;
        if (sigwait(set, &sig) != 0) {
            return NULL;
        }
        pthread_mutex_lock(&g_lock);
        if (g_quit) {
            pthread_mutex_unlock(&g_lock);
            return NULL;
        }
        if (g_running != NULL) {
            psr_error *err = NULL;
            psr_result rc;
            fprintf(stderr, "agent: stopping the pipeline\n");
            rc = psr_pipeline_stop(g_running, &err);
            if (rc != PSR_RESULT_OK) {
                report("stop", rc, err);
            }
        }
        pthread_mutex_unlock(&g_lock);
    }
}

int main(int argc, char **argv) {
    const char *url = getenv("PSREMOTE_URL");
    const char *user = getenv("PSREMOTE_USER");
    const char *password = getenv("PSREMOTE_PASSWORD");
    const char *trusted_hosts = getenv("PSREMOTE_TRUSTED_HOSTS");
    const char *ca_file = getenv("PSREMOTE_CA_FILE");
    const char *configuration = NULL;
    const char *mechanism = NULL;
    char *info = NULL;
    int allow_unencrypted = 0, print_json = 0, print_info = 0, opt, i, status = 2;
    unsigned long timeout_ms = 0;
    size_t script_len = 1;
    char *script = NULL;
    sigset_t signals;
    pthread_t sig_thread;
    psr_config *config = NULL;
    psr_client *client = NULL;
    psr_pool *pool = NULL;
    psr_pipeline *pipeline = NULL;
    psr_invocation *result = NULL;
    psr_error *err = NULL;
    psr_result rc;
    psr_host host;
    psr_callbacks callbacks;

    if (!abi_matches()) {
        fprintf(stderr, "agent: compiled against psremote %s but loaded libpsremote %s\n", PSR_VERSION_STRING,
                psr_version());
        return 2;
    }
    while ((opt = getopt(argc, argv, "c:a:ut:jihV")) != -1) {
        switch (opt) {
        case 'c': configuration = optarg; break;
        case 'a': mechanism = optarg; break;
        case 'u': allow_unencrypted = 1; break;
        case 't': timeout_ms = strtoul(optarg, NULL, 10); break;
        case 'j': print_json = 1; break;
        case 'i': print_info = 1; break;
        case 'V':
            printf("libpsremote %s (compiled against psremote.h %s)\n", psr_version(), PSR_VERSION_STRING);
            return 0;
        default: usage(); return 2;
        }
    }
    if (optind >= argc || url == NULL || user == NULL || password == NULL) {
        usage();
        return 2;
    }
    /* The pipeline is the remaining arguments joined by spaces. */
    for (i = optind; i < argc; i++) {
        script_len += strlen(argv[i]) + 1;
    }
    script = (char *)calloc(script_len, 1);
    if (script == NULL) {
        return 2;
    }
    for (i = optind; i < argc; i++) {
        if (i > optind) {
            strcat(script, " ");
        }
        strcat(script, argv[i]);
    }

    /* Block SIGINT/SIGTERM before any thread exists, so only the signal thread receives them. */
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    if (pthread_create(&sig_thread, NULL, signal_thread, &signals) != 0) {
        free(script);
        return 2;
    }

    config = psr_config_new(url, user, password);
    if (config == NULL) {
        fprintf(stderr, "agent: PSREMOTE_URL, PSREMOTE_USER or PSREMOTE_PASSWORD cannot be used\n");
        goto done;
    }
    if (mechanism != NULL && (rc = psr_config_set_auth(config, mechanism, &err)) != PSR_RESULT_OK) {
        report("configuration", rc, err);
        goto done;
    }
    if (allow_unencrypted && (rc = psr_config_set_allow_unencrypted(config, true, &err)) != PSR_RESULT_OK) {
        report("configuration", rc, err);
        goto done;
    }
    if (trusted_hosts != NULL && (rc = psr_config_set_trusted_hosts(config, trusted_hosts, &err)) != PSR_RESULT_OK) {
        report("configuration", rc, err);
        goto done;
    }
    if (ca_file != NULL && (rc = psr_config_set_ca_file(config, ca_file, &err)) != PSR_RESULT_OK) {
        report("configuration", rc, err);
        goto done;
    }
    /* A security refusal (PSR_RESULT_POLICY) or a certificate that does not verify
     * (PSR_RESULT_TLS) is reported here, with a message that says what to change. */
    if ((rc = psr_client_connect(config, &client, &err)) != PSR_RESULT_OK) {
        report("connect", rc, err);
        goto done;
    }
    if (print_info) {
        if ((rc = psr_client_connection_info_json(client, &info, &err)) != PSR_RESULT_OK) {
            report("connection info", rc, err);
            goto done;
        }
        fprintf(stderr, "agent: connected: %s\n", info);
        psr_string_free(info);
    }

    memset(&host, 0, sizeof host);
    host.read_line = host_read_line;
    host.prompt_for_credential = host_credential;
    if ((rc = psr_pool_open(client, configuration, &host, &pool, &err)) != PSR_RESULT_OK) {
        report("open runspace pool", rc, err);
        goto done;
    }
    if ((rc = psr_pool_start_script(pool, script, false, &pipeline, &err)) != PSR_RESULT_OK) {
        report("start pipeline", rc, err);
        goto done;
    }
    pthread_mutex_lock(&g_lock);
    g_running = pipeline;
    pthread_mutex_unlock(&g_lock);

    memset(&callbacks, 0, sizeof callbacks);
    callbacks.on_output = on_output;
    callbacks.on_record = on_record;
    callbacks.on_progress = on_progress;
    rc = psr_pipeline_wait(pipeline, &callbacks, (uint32_t)timeout_ms, &result, &err);
    if (rc == PSR_RESULT_TIMEOUT) {
        fprintf(stderr, "agent: no result after %lu ms, stopping the pipeline\n", timeout_ms);
        psr_error_free(err);
        err = NULL;
        if ((rc = psr_pipeline_stop(pipeline, &err)) == PSR_RESULT_OK) {
            rc = psr_pipeline_wait(pipeline, &callbacks, 0, &result, &err);
        }
    }
    pthread_mutex_lock(&g_lock);
    g_running = NULL;
    pthread_mutex_unlock(&g_lock);
    if (rc != PSR_RESULT_OK) {
        report("pipeline", rc, err);
        goto done;
    }

    if (print_json) {
        printf("%s\n", psr_invocation_json(result));
    }
    switch (psr_invocation_state(result)) {
    case PSR_STATE_COMPLETED:
        status = 0;
        break;
    case PSR_STATE_FAILED:
        /* The terminating error is the invocation's last error record. */
        if (psr_invocation_error_count(result) > 0) {
            fprintf(stderr, "agent: the pipeline failed: %s\n",
                    psr_invocation_error_message(result, psr_invocation_error_count(result) - 1));
        } else {
            fprintf(stderr, "agent: the pipeline failed\n");
        }
        status = 1;
        break;
    default:
        fprintf(stderr, "agent: the pipeline was stopped\n");
        status = 1;
        break;
    }

done:
    psr_invocation_free(result);
    psr_pipeline_free(pipeline);
    if (pool != NULL && (rc = psr_pool_close(pool, &err)) != PSR_RESULT_OK) {
        report("close runspace pool", rc, err);
    }
    psr_pool_free(pool);
    psr_client_free(client);
    psr_config_free(config);
    free(script);

    pthread_mutex_lock(&g_lock);
    g_quit = 1;
    pthread_mutex_unlock(&g_lock);
    pthread_kill(sig_thread, SIGTERM); /* blocked, so sigwait in the signal thread takes it */
    pthread_join(sig_thread, NULL);
    return status;
}
