/*
 * Tests of psremote's C API (include/psremote.h) against the loopback endpoint.
 *
 * Plain C99 that also compiles as C++17; no test framework. The endpoint's URL comes from
 * PSREMOTE_URL (bindings-c/tests/run.sh starts the endpoint with the account
 * DOMAIN:user:Passw0rd!). The HTTPS tests use a second endpoint: PSREMOTE_HTTPS_URL, serving
 * server.pem of the test certificates in PSREMOTE_CERTS (psremote_testserver.certs), with
 * client certificates and channel bindings required; PSREMOTE_SERVER_PIN and
 * PSREMOTE_SERVER_SHA256 are its key's pin and its certificate's fingerprint. The Kerberos tests
 * use a throwaway MIT realm (python -m psremote_testserver.kdc) and a third endpoint with its
 * keytab: PSREMOTE_KRB_URL, PSREMOTE_KRB_KDC (the KDC, 127.0.0.1:PORT) and PSREMOTE_KRB_REALM.
 * The SPN's host (the keytab holds HTTP/localhost) is named with psr_config_set_kerberos while
 * the URL stays an address, so that the tests make no name lookups: glibc's per-thread resolver
 * state would show up as a leak under valgrind. The fleet tests add two endpoints: PSREMOTE_URL2,
 * a second healthy one, and PSREMOTE_STALLED_URL, whose Receives stall (--misbehave
 * stalled-receives). The proxy test goes through PSREMOTE_PROXY_URL, tinyproxy with Basic
 * authentication (proxyuser / s3cret-proxy-pass), and PSREMOTE_SOCKS_URL, microsocks without
 * (python -m psremote_testserver.proxies).
 * The SSH test reaches Debian's sshd (python -m psremote_testserver.sshd, the
 * endpoint's out-of-process mode as its powershell subsystem): PSREMOTE_SSH_PORT, _USER, _KEY,
 * _WRONG_KEY, _KNOWN_HOSTS, _CHANGED_KNOWN_HOSTS, _EMPTY_KNOWN_HOSTS, _FINGERPRINT, and for password
 * logons _PASSWORD_USER and _PASSWORD. The last line printed is
 * "N passed, M failed"; the exit status is nonzero when a check failed.
 *
 * Set PSR_TEST_VERBOSE=1 to print every check and the library's log messages.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "psremote.h"

#include "check.h"

/* ------------------------------------------------------------------------------------------ */
/* Checks                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* A call that should have failed wrote its out-param anyway: check, and free what it wrote. */
#define CHECK_UNTOUCHED(ptr, type, free_fn)                                                                       \
    do {                                                                                                       \
        if (!CHECK((ptr) == (type *)SENTINEL)) {                                                               \
            free_fn(ptr);                                                                                      \
        }                                                                                                      \
        (ptr) = (type *)SENTINEL;                                                                              \
    } while (0)

#define EXPECT_FAIL(call, code) expect_fail_at((call), &err, (code), #call, __FILE__, __LINE__)

static void begin(const char *name) {
    g_test = name;
    printf("test %s\n", name);
    fflush(stdout);
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                               */
/* ------------------------------------------------------------------------------------------ */

static const char *g_url;
static const char *g_https_url;    /* PSREMOTE_HTTPS_URL */
static const char *g_certs;        /* PSREMOTE_CERTS: the directory of the test certificates */
static const char *g_server_pin;   /* PSREMOTE_SERVER_PIN: SHA-256 of server.pem's SubjectPublicKeyInfo */
static const char *g_server_sha256; /* PSREMOTE_SERVER_SHA256: SHA-256 of server.pem (DER) */
static const char *g_krb_url;      /* PSREMOTE_KRB_URL: the endpoint accepting the realm's tickets */
static const char *g_krb_kdc;      /* PSREMOTE_KRB_KDC: 127.0.0.1:PORT, UDP and TCP */
static const char *g_krb_realm;    /* PSREMOTE_KRB_REALM: PSREMOTE.TEST */
static int g_valgrind;             /* PSR_TEST_VALGRIND: run.sh runs this build under valgrind */
static const char *g_proxy_url;    /* PSREMOTE_PROXY_URL: tinyproxy (CONNECT) with Basic authentication */
static const char *g_socks_url;    /* PSREMOTE_SOCKS_URL: microsocks (SOCKS5) without authentication */
static const char *g_ssh_port, *g_ssh_user, *g_ssh_key, *g_ssh_wrong_key; /* PSREMOTE_SSH_*: the sshd fixture */
static const char *g_ssh_known_hosts, *g_ssh_changed_known_hosts, *g_ssh_empty_known_hosts, *g_ssh_fingerprint;
static const char *g_ssh_password_user, *g_ssh_password;
static const char *const USERNAME = "DOMAIN\\user";
static const char *const PASSWORD = "Passw0rd!";
static pthread_t g_main_thread;

/* A pointer the library must leave alone when a call fails ("out-params written only on success"). */
static char g_sentinel_storage;
#define SENTINEL ((void *)&g_sentinel_storage)

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000u);
    ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

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

static int contains(const char *haystack, const char *needle) {
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* A copy of JSON text without the whitespace outside strings, for comparisons that do not
 * depend on formatting. */
static char *json_compact(const char *json) {
    size_t i, o = 0;
    int in_string = 0;
    char *out;
    if (json == NULL) {
        return NULL;
    }
    out = (char *)malloc(strlen(json) + 1);
    if (out == NULL) {
        return NULL;
    }
    for (i = 0; json[i] != '\0'; i++) {
        char c = json[i];
        if (in_string) {
            out[o++] = c;
            if (c == '\\' && json[i + 1] != '\0') {
                out[o++] = json[++i];
            } else if (c == '"') {
                in_string = 0;
            }
        } else if (c == '"') {
            in_string = 1;
            out[o++] = c;
        } else if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            out[o++] = c;
        }
    }
    out[o] = '\0';
    return out;
}

/* JSON text contains `fragment` once both are compacted. */
static int json_contains(const char *json, const char *fragment) {
    char *a = json_compact(json);
    char *b = json_compact(fragment);
    int found = a != NULL && b != NULL && strstr(a, b) != NULL;
    free(a);
    free(b);
    return found;
}

/* JSON text equals `expected` once both are compacted. */
static int json_equals(const char *json, const char *expected) {
    char *a = json_compact(json);
    char *b = json_compact(expected);
    int same = a != NULL && b != NULL && strcmp(a, b) == 0;
    free(a);
    free(b);
    return same;
}

/* A strict JSON syntax check (RFC 8259), recursive descent. */
static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
        p++;
    }
    return p;
}

static const char *json_value(const char *p, int depth);

static const char *json_string(const char *p) {
    if (*p != '"') {
        return NULL;
    }
    p++;
    while (*p != '"') {
        unsigned char c = (unsigned char)*p;
        if (c == '\0' || c < 0x20) {
            return NULL;
        }
        if (c == '\\') {
            p++;
            if (*p == 'u') {
                int k;
                for (k = 1; k <= 4; k++) {
                    char h = p[k];
                    if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F'))) {
                        return NULL;
                    }
                }
                p += 5;
                continue;
            }
            if (*p == '\0' || strchr("\"\\/bfnrt", *p) == NULL) {
                return NULL;
            }
        }
        p++;
    }
    return p + 1;
}

static const char *json_number(const char *p) {
    if (*p == '-') {
        p++;
    }
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    } else {
        return NULL;
    }
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) {
            return NULL;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') {
            p++;
        }
        if (!(*p >= '0' && *p <= '9')) {
            return NULL;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    return p;
}

static const char *json_value(const char *p, int depth) {
    if (depth > 200) {
        return NULL;
    }
    p = json_ws(p);
    switch (*p) {
    case '{':
        p = json_ws(p + 1);
        if (*p == '}') {
            return p + 1;
        }
        for (;;) {
            p = json_string(json_ws(p));
            if (p == NULL) {
                return NULL;
            }
            p = json_ws(p);
            if (*p != ':') {
                return NULL;
            }
            p = json_value(p + 1, depth + 1);
            if (p == NULL) {
                return NULL;
            }
            p = json_ws(p);
            if (*p == '}') {
                return p + 1;
            }
            if (*p != ',') {
                return NULL;
            }
            p++;
        }
    case '[':
        p = json_ws(p + 1);
        if (*p == ']') {
            return p + 1;
        }
        for (;;) {
            p = json_value(p, depth + 1);
            if (p == NULL) {
                return NULL;
            }
            p = json_ws(p);
            if (*p == ']') {
                return p + 1;
            }
            if (*p != ',') {
                return NULL;
            }
            p++;
        }
    case '"':
        return json_string(p);
    case 't':
        return strncmp(p, "true", 4) == 0 ? p + 4 : NULL;
    case 'f':
        return strncmp(p, "false", 5) == 0 ? p + 5 : NULL;
    case 'n':
        return strncmp(p, "null", 4) == 0 ? p + 4 : NULL;
    default:
        return json_number(p);
    }
}

static int json_valid(const char *text) {
    const char *end;
    if (text == NULL) {
        return 0;
    }
    end = json_value(text, 0);
    return end != NULL && *json_ws(end) == '\0';
}

/* ------------------------------------------------------------------------------------------ */
/* The endpoint's control state over a raw socket                                              */
/* ------------------------------------------------------------------------------------------ */

/* Port of an http://127.0.0.1:PORT/... URL, or 0. */
static int url_port(const char *url) {
    const char *host = strstr(url, "://");
    const char *colon;
    if (host == NULL) {
        return 0;
    }
    colon = strchr(host + 3, ':');
    return colon != NULL ? atoi(colon + 1) : 0;
}

/* GET /_control/state of the plain-http endpoint at `url`; the body (malloc'd) or NULL. */
static char *control_state_at(const char *url) {
    struct sockaddr_in addr;
    const char *request = "GET /_control/state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    size_t len = 0, cap = 4096;
    char *buf, *body;
    ssize_t n;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return NULL;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)url_port(url));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        send(fd, request, strlen(request), 0) != (ssize_t)strlen(request)) {
        close(fd);
        return NULL;
    }
    buf = (char *)malloc(cap);
    while (buf != NULL && (n = recv(fd, buf + len, cap - len - 1, 0)) > 0) {
        len += (size_t)n;
        if (cap - len < 1024) {
            char *bigger = (char *)realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    close(fd);
    if (buf == NULL) {
        return NULL;
    }
    buf[len] = '\0';
    body = strstr(buf, "\r\n\r\n");
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0 || body == NULL) {
        free(buf);
        return NULL;
    }
    body = dup_str(body + 4);
    free(buf);
    return body;
}

/* GET /_control/state of the main endpoint (PSREMOTE_URL). */
static char *control_state(void) {
    return control_state_at(g_url);
}

/* The last logon the endpoint at `url` recorded, as compacted JSON (malloc'd), or NULL. Logons
 * are flat objects that begin with "scheme". */
static char *last_logon_at(const char *url) {
    char *state = control_state_at(url);
    char *compact = json_compact(state);
    char *logon = NULL, *p, *last = NULL, *end;
    free(state);
    for (p = compact != NULL ? strstr(compact, "{\"scheme\":") : NULL; p != NULL; p = strstr(p + 1, "{\"scheme\":")) {
        last = p;
    }
    if (last != NULL && (end = strchr(last, '}')) != NULL) {
        end[1] = '\0';
        logon = dup_str(last);
    }
    free(compact);
    return logon;
}

/* The integer member `key` of the control state, or -1. */
static long state_value(const char *state, const char *key) {
    char quoted[64];
    const char *p;
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    p = state != NULL ? strstr(state, quoted) : NULL;
    if (p == NULL) {
        return -1;
    }
    p = json_ws(p + strlen(quoted));
    if (*p != ':') {
        return -1;
    }
    return strtol(p + 1, NULL, 10);
}

/* Polls the control state of the endpoint at `url` until `key` equals `want` (up to
 * `limit_ms`); the last value seen. */
static long wait_state_at(const char *url, const char *key, long want, unsigned limit_ms) {
    uint64_t deadline = now_ms() + limit_ms;
    long value;
    for (;;) {
        char *state = control_state_at(url);
        value = state_value(state, key);
        free(state);
        if (value == want || now_ms() >= deadline) {
            return value;
        }
        sleep_ms(50);
    }
}

/* Polls the control state of the main endpoint (PSREMOTE_URL); see wait_state_at. */
static long wait_state(const char *key, long want, unsigned limit_ms) {
    return wait_state_at(g_url, key, want, limit_ms);
}

/* The integer member `key` once it stopped changing (earlier tests' clients may still be
 * deleting their shells in the background): the same value 300 ms apart, within 10 s. */
static long settled_state(const char *key) {
    uint64_t deadline = now_ms() + 10000;
    long last = -2, value;
    for (;;) {
        char *state = control_state();
        value = state_value(state, key);
        free(state);
        if (value == last || now_ms() >= deadline) {
            return value;
        }
        last = value;
        sleep_ms(300);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Collecting callbacks                                                                        */
/* ------------------------------------------------------------------------------------------ */

#define MAX_ITEMS 16

typedef struct collector {
    int calls_off_thread; /* callbacks that ran on a thread other than the one in psr_pipeline_wait */
    pthread_t waiter;
    int outputs;
    char *output_json[MAX_ITEMS];
    char *output_clixml[MAX_ITEMS];
    int records[6];            /* by psr_stream */
    char *last_record[6];      /* by psr_stream */
    int progress;
    char *activity;
    char *status;
    int32_t percent;
    int fail_output_at;        /* return nonzero from the n-th output (1-based); 0 = never */
    int fail_records;          /* return nonzero from every record */
    int fail_progress;         /* return nonzero from every progress record */
} collector;

static void collector_init(collector *c) {
    memset(c, 0, sizeof *c);
    c->waiter = pthread_self();
}

static void collector_clear(collector *c) {
    int i;
    for (i = 0; i < MAX_ITEMS; i++) {
        free(c->output_json[i]);
        free(c->output_clixml[i]);
    }
    for (i = 0; i < 6; i++) {
        free(c->last_record[i]);
    }
    free(c->activity);
    free(c->status);
    memset(c, 0, sizeof *c);
}

static void collector_thread(collector *c) {
    if (!pthread_equal(pthread_self(), c->waiter)) {
        c->calls_off_thread++;
    }
}

static int32_t on_output(void *userdata, const char *json, const char *clixml) {
    collector *c = (collector *)userdata;
    collector_thread(c);
    if (c->outputs < MAX_ITEMS) {
        c->output_json[c->outputs] = dup_str(json);
        c->output_clixml[c->outputs] = dup_str(clixml);
    }
    c->outputs++;
    return (c->fail_output_at != 0 && c->outputs >= c->fail_output_at) ? 1 : 0;
}

static int32_t on_record(void *userdata, psr_stream stream, const char *message) {
    collector *c = (collector *)userdata;
    int index = (int)stream;
    collector_thread(c);
    if (index < 1 || index > 5) {
        index = 0; /* unknown streams are counted in slot 0 */
    }
    c->records[index]++;
    free(c->last_record[index]);
    c->last_record[index] = dup_str(message);
    return c->fail_records ? 7 : 0;
}

static int32_t on_progress(void *userdata, const char *activity, const char *status, int32_t percent_complete) {
    collector *c = (collector *)userdata;
    collector_thread(c);
    c->progress++;
    free(c->activity);
    free(c->status);
    c->activity = dup_str(activity);
    c->status = dup_str(status);
    c->percent = percent_complete;
    return c->fail_progress ? -1 : 0;
}

static psr_callbacks callbacks_for(collector *c) {
    psr_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.userdata = c;
    cb.on_output = on_output;
    cb.on_record = on_record;
    cb.on_progress = on_progress;
    return cb;
}

/* ------------------------------------------------------------------------------------------ */
/* Host callbacks                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct host_state {
    pthread_mutex_t lock;
    int read_line_calls;
    int credential_calls;
    int on_main_thread;
    int fail;
    char prompt[256];
    char caption[256];
    char message[256];
    size_t read_buf_len;
    size_t user_len;
    size_t password_len;
} host_state;

static void copy_text(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src != NULL ? src : "(null)");
}

static int32_t host_read_line(void *userdata, const char *prompt, char *buf, size_t buf_len) {
    host_state *h = (host_state *)userdata;
    pthread_mutex_lock(&h->lock);
    h->read_line_calls++;
    if (pthread_equal(pthread_self(), g_main_thread)) {
        h->on_main_thread++;
    }
    copy_text(h->prompt, sizeof h->prompt, prompt);
    h->read_buf_len = buf_len;
    pthread_mutex_unlock(&h->lock);
    if (h->fail) {
        return 5;
    }
    if (buf == NULL || buf_len == 0) {
        return 1;
    }
    snprintf(buf, buf_len, "%s", "Alice from C");
    return 0;
}

static int32_t host_credential(void *userdata, const char *caption, const char *message, char *user,
                               size_t user_len, char *password, size_t password_len) {
    host_state *h = (host_state *)userdata;
    pthread_mutex_lock(&h->lock);
    h->credential_calls++;
    if (pthread_equal(pthread_self(), g_main_thread)) {
        h->on_main_thread++;
    }
    copy_text(h->caption, sizeof h->caption, caption);
    copy_text(h->message, sizeof h->message, message);
    h->user_len = user_len;
    h->password_len = password_len;
    pthread_mutex_unlock(&h->lock);
    if (h->fail) {
        return 9;
    }
    if (user == NULL || password == NULL || user_len == 0 || password_len == 0) {
        return 1;
    }
    snprintf(user, user_len, "%s", "CORP\\bob");
    snprintf(password, password_len, "%s", "Sup3r-secret");
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Log callback                                                                                */
/* ------------------------------------------------------------------------------------------ */

static pthread_mutex_t g_log_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_log_count;
static int g_log_min_level = 100;
static int g_log_max_level;
static int g_log_bad_args;
static int g_log_connected;
static int g_log_unverified;
static int g_log_userdata_token;
/* Audit events (target psremote::audit): connect events, by the mechanism negotiated, and the
 * delegation warnings; connect events under any other target. */
static int g_log_audit_connect;
static int g_log_audit_kerberos;
static int g_log_audit_credssp;
static int g_log_audit_credssp_warning;
static int g_log_audit_krb_delegation;
static int g_log_audit_elsewhere;
/* Audit connect events of SSH connections, and host keys accepted unknown (warnings). */
static int g_log_audit_ssh;
static int g_log_audit_ssh_accepted;
/* Records holding one of SECRETS (target or message), and the first such record. */
static int g_log_secrets;
static char g_log_secret_example[160];

/* Every password these tests hand to the library (users', wrong ones, a client key's, a host
 * credential's): none may ever appear in a log record, at any level. */
static const char *const SECRETS[] = {"Passw0rd!",          "not-the-password",       "Wr0ng-krb-Passw0rd",
                                      "Wr0ng-credssp-Pa55", "Wr0ng-keypass-1234",     "keypass",
                                      "Sup3r-secret"};

static void log_secrets_and_audit(int32_t level, const char *target, const char *message) {
    size_t i;
    for (i = 0; i < sizeof SECRETS / sizeof SECRETS[0]; i++) {
        if (strstr(message, SECRETS[i]) != NULL || strstr(target, SECRETS[i]) != NULL) {
            if (g_log_secrets++ == 0) {
                /* Where it was, not what: the secret itself is not printed. */
                snprintf(g_log_secret_example, sizeof g_log_secret_example, "level %d, target %s, secret #%u",
                         (int)level, target, (unsigned)i);
            }
        }
    }
    if (g_ssh_password != NULL && g_ssh_password[0] != '\0' && strstr(message, g_ssh_password) != NULL) {
        if (g_log_secrets++ == 0) {
            snprintf(g_log_secret_example, sizeof g_log_secret_example, "level %d, target %s, the SSH password",
                     (int)level, target);
        }
    }
    if (strcmp(target, "psremote::audit") == 0) {
        if (strstr(message, "event=\"host_key_accepted\"") != NULL && level == 2) {
            g_log_audit_ssh_accepted++;
        }
        if (strstr(message, "event=\"connect\"") != NULL) {
            g_log_audit_connect++;
            if (strstr(message, "transport=\"ssh\"") != NULL && g_ssh_fingerprint != NULL &&
                strstr(message, g_ssh_fingerprint) != NULL) {
                g_log_audit_ssh++;
            }
            if (strstr(message, "negotiated=\"kerberos\"") != NULL) {
                g_log_audit_kerberos++;
            } else if (strstr(message, "negotiated=\"credssp\"") != NULL) {
                g_log_audit_credssp++;
            }
        } else if (strstr(message, "event=\"credssp_delegation\"") != NULL && level == 2) {
            g_log_audit_credssp_warning++;
        } else if (strstr(message, "delegating a forwardable Kerberos ticket") != NULL && level == 2) {
            g_log_audit_krb_delegation++;
        }
    } else if (strstr(message, "event=\"connect\"") != NULL) {
        g_log_audit_elsewhere++;
    }
}

static void log_callback(void *userdata, int32_t level, const char *target, const char *message) {
    pthread_mutex_lock(&g_log_lock);
    g_log_count++;
    if (target != NULL && message != NULL) {
        log_secrets_and_audit(level, target, message);
    }
    if (level < g_log_min_level) {
        g_log_min_level = level;
    }
    if (level > g_log_max_level) {
        g_log_max_level = level;
    }
    if (userdata != (void *)&g_log_userdata_token || target == NULL || message == NULL) {
        g_log_bad_args++;
    } else if (strstr(message, "connected") != NULL) {
        g_log_connected++;
    } else if (strstr(message, "verification is disabled") != NULL) {
        g_log_unverified++;
    }
    if (g_verbose) {
        fprintf(stderr, "    log %d %s: %s\n", (int)level, target != NULL ? target : "(null)",
                message != NULL ? message : "(null)");
    }
    pthread_mutex_unlock(&g_log_lock);
}

static int log_count(void) {
    int n;
    pthread_mutex_lock(&g_log_lock);
    n = g_log_count;
    pthread_mutex_unlock(&g_log_lock);
    return n;
}

/* One of the counters above, read under the lock. */
static int log_counter(const int *counter) {
    int n;
    pthread_mutex_lock(&g_log_lock);
    n = *counter;
    pthread_mutex_unlock(&g_log_lock);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Session helpers                                                                             */
/* ------------------------------------------------------------------------------------------ */

static psr_config *make_config_at(const char *url, const char *password) {
    psr_config *cfg = psr_config_new(url, USERNAME, password);
    psr_error *err = NULL;
    if (cfg != NULL) {
        /* Generous, so that runs under valgrind do not trip it. */
        EXPECT_OK(psr_config_set_operation_timeout_ms(cfg, 20000, &err));
        /* The endpoint is plain http on 127.0.0.1: nothing proves the server, so NTLM needs the
         * host named as WinRM's TrustedHosts would. */
        EXPECT_OK(psr_config_set_trusted_hosts(cfg, "127.0.0.1", &err));
    }
    return cfg;
}

static psr_config *make_config(const char *password) {
    return make_config_at(g_url, password);
}

static psr_client *connect_client(void) {
    psr_config *cfg = make_config(PASSWORD);
    psr_client *client = NULL;
    psr_error *err = NULL;
    if (!CHECK(cfg != NULL)) {
        return NULL;
    }
    if (!EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        client = NULL;
    }
    psr_config_free(cfg);
    return client;
}

static psr_pool *open_pool(psr_client *client, const psr_host *host) {
    psr_pool *pool = NULL;
    psr_error *err = NULL;
    if (client == NULL) {
        return NULL;
    }
    if (!EXPECT_OK(psr_pool_open(client, NULL, host, &pool, &err))) {
        return NULL;
    }
    return pool;
}

/* Runs a script to its end with callbacks into `col` (may be NULL); the invocation or NULL. */
static psr_invocation *run_script(psr_pool *pool, const char *script, collector *col) {
    psr_pipeline *pl = NULL;
    psr_invocation *inv = NULL;
    psr_error *err = NULL;
    psr_callbacks cb;
    if (pool == NULL) {
        return NULL;
    }
    if (!expect_ok_at(psr_pool_start_script(pool, script, false, &pl, &err), &err, script, __FILE__, __LINE__)) {
        return NULL;
    }
    if (col != NULL) {
        cb = callbacks_for(col);
    }
    if (!expect_ok_at(psr_pipeline_wait(pl, col != NULL ? &cb : NULL, 0, &inv, &err), &err, script, __FILE__,
                      __LINE__)) {
        inv = NULL;
    }
    psr_pipeline_free(pl);
    return inv;
}

/* ------------------------------------------------------------------------------------------ */
/* Tests                                                                                       */
/* ------------------------------------------------------------------------------------------ */

static void test_version_and_names(void) {
    unsigned r;
    const char *v = psr_version();
    begin("version_and_names");
    CHECK(v != NULL && v[0] >= '0' && v[0] <= '9' && strchr(v, '.') != NULL);
    CHECK(psr_version() == v);
    /* The library this program loaded is the release whose header it was compiled with. */
    CHECK(v != NULL && strcmp(v, PSR_VERSION_STRING) == 0);
    CHECK(psr_version_number() == PSR_VERSION_NUMBER);
    CHECK(PSR_VERSION_NUMBER == ((uint32_t)PSR_VERSION_MAJOR << 16 | (uint32_t)PSR_VERSION_MINOR << 8 |
                                 (uint32_t)PSR_VERSION_PATCH));
    {
        /* The number and the string name the same version, part by part. */
        char spelled[32];
        snprintf(spelled, sizeof spelled, "%u.%u.%u", (unsigned)(psr_version_number() >> 16),
                 (unsigned)(psr_version_number() >> 8 & 0xff), (unsigned)(psr_version_number() & 0xff));
        CHECK(v != NULL && strcmp(v, spelled) == 0);
    }
    /* The macros are usable in preprocessor conditions, as version checks need. */
#if PSR_VERSION_NUMBER != ((PSR_VERSION_MAJOR << 16) | (PSR_VERSION_MINOR << 8) | PSR_VERSION_PATCH)
#error "PSR_VERSION_NUMBER does not evaluate in #if"
#endif
    CHECK(sizeof PSR_VERSION_STRING >= sizeof "0.0.0");
    for (r = 0; r <= 14; r++) {
        const char *name = psr_result_name((psr_result)r);
        CHECK(name != NULL && name[0] != '\0');
    }
    CHECK(strstr(psr_result_name(PSR_RESULT_OK), "OK") != NULL);
    CHECK(strstr(psr_result_name(PSR_RESULT_CLOSED), "CLOSED") != NULL);
    CHECK(strcmp(psr_result_name(PSR_RESULT_TIMEOUT), psr_result_name(PSR_RESULT_CALLBACK)) != 0);
    CHECK(psr_result_name((psr_result)99) != NULL);
    CHECK(psr_result_name((psr_result)0xFFFFFFFFu) != NULL);
    /* The values are part of the ABI. */
    CHECK(PSR_RESULT_OK == 0 && PSR_RESULT_NULL_ARGUMENT == 1 && PSR_RESULT_INVALID_ARGUMENT == 2 &&
          PSR_RESULT_INVALID_CONFIG == 3 && PSR_RESULT_AUTHENTICATION == 4 && PSR_RESULT_CONNECT == 5 &&
          PSR_RESULT_TRANSPORT == 6 && PSR_RESULT_FAULT == 7 && PSR_RESULT_PROTOCOL == 8 &&
          PSR_RESULT_TIMEOUT == 9 && PSR_RESULT_CLOSED == 10 && PSR_RESULT_CALLBACK == 11 &&
          PSR_RESULT_PANIC == 12 && PSR_RESULT_TLS == 13 && PSR_RESULT_POLICY == 14);
    CHECK(strcmp(psr_result_name(PSR_RESULT_TLS), "PSR_RESULT_TLS") == 0);
    CHECK(strcmp(psr_result_name(PSR_RESULT_POLICY), "PSR_RESULT_POLICY") == 0);
    CHECK(PSR_STREAM_ERROR == 1 && PSR_STREAM_WARNING == 2 && PSR_STREAM_VERBOSE == 3 && PSR_STREAM_DEBUG == 4 &&
          PSR_STREAM_INFORMATION == 5);
    CHECK(PSR_STATE_STOPPED == 3 && PSR_STATE_COMPLETED == 4 && PSR_STATE_FAILED == 5);
    CHECK(sizeof(psr_result) == 4);
}

/* Every function with NULL where a pointer is expected, with and without an error out-param;
 * every _free with NULL. */
static void test_null_arguments(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = (psr_client *)SENTINEL;
    psr_pool *pool = (psr_pool *)SENTINEL;
    psr_pipeline *pl = (psr_pipeline *)SENTINEL;
    psr_invocation *inv = (psr_invocation *)SENTINEL;
    psr_cmd_result *res = (psr_cmd_result *)SENTINEL;
    char *json = (char *)SENTINEL;
    size_t len = 77;
    const char *const args[1] = {"x"};
    begin("null_arguments");

    /* error object accessors */
    CHECK(psr_error_code(NULL) == PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_error_message(NULL) == NULL);
    CHECK(psr_error_fault_code(NULL) == 0);
    CHECK(psr_invocation_error_id(NULL, 0) == NULL);

    /* config */
    CHECK(psr_config_new(NULL, USERNAME, PASSWORD) == NULL);
    CHECK(psr_config_new(g_url, NULL, PASSWORD) == NULL);
    CHECK(psr_config_new(g_url, USERNAME, NULL) == NULL);
    CHECK(psr_config_new(NULL, NULL, NULL) == NULL);
    EXPECT_FAIL(psr_config_set_auth(NULL, "ntlm", &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_config_set_auth(NULL, "ntlm", NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_operation_timeout_ms(NULL, 1000, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_config_set_operation_timeout_ms(NULL, 1000, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_allow_unencrypted(NULL, true, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_config_set_allow_unencrypted(NULL, false, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_trusted_hosts(NULL, "h", &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_config_set_trusted_hosts(NULL, NULL, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_ca_file(NULL, "ca.pem", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_ca_dir(NULL, "/etc/ssl/certs", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_server_name(NULL, "h", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_add_pinned_key(NULL, "00", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_insecure_skip_verify(NULL, false, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_tls_versions(NULL, "1.2", "1.3", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_client_certificate(NULL, "c.pem", NULL, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_message_encryption(NULL, "auto", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_kerberos(NULL, NULL, NULL, NULL, false, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_config_set_kerberos(NULL, NULL, NULL, NULL, true, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_audit_arguments(NULL, true, &err), PSR_RESULT_NULL_ARGUMENT);
    cfg = psr_config_new(g_url, USERNAME, PASSWORD);
    CHECK(cfg != NULL);
    EXPECT_FAIL(psr_config_set_auth(cfg, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_add_pinned_key(cfg, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_message_encryption(cfg, NULL, &err), PSR_RESULT_NULL_ARGUMENT);

    /* client */
    EXPECT_FAIL(psr_client_connect(NULL, &client, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(client, psr_client, psr_client_free);
    CHECK(psr_client_connect(NULL, &client, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_connect(cfg, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_run_cmd(NULL, "echo", args, 1, NULL, 0, &res, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);
    CHECK(psr_client_run_cmd(NULL, "echo", NULL, 0, NULL, 0, &res, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_connection_info_json(NULL, &json, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(json, char, psr_string_free);

    /* cmd results */
    CHECK(psr_cmd_result_stdout(NULL, &len) == NULL);
    CHECK(psr_cmd_result_stderr(NULL, &len) == NULL);
    (void)psr_cmd_result_exit_code(NULL);
    (void)psr_cmd_result_stdout(NULL, NULL);
    (void)psr_cmd_result_stderr(NULL, NULL);

    /* pools */
    EXPECT_FAIL(psr_pool_open(NULL, NULL, NULL, &pool, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(pool, psr_pool, psr_pool_free);
    CHECK(psr_pool_open(NULL, "Microsoft.PowerShell", NULL, &pool, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_close(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_pool_close(NULL, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_start_script(NULL, "1+1", false, &pl, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(pl, psr_pipeline, psr_pipeline_free);
    EXPECT_FAIL(psr_pool_start_command(NULL, "Get-Date", NULL, false, &pl, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(pl, psr_pipeline, psr_pipeline_free);

    /* pipelines */
    EXPECT_FAIL(psr_pipeline_send_input_json(NULL, "1", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pipeline_end_input(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pipeline_stop(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_pipeline_stop(NULL, NULL) == PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pipeline_wait(NULL, NULL, 0, &inv, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(inv, psr_invocation, psr_invocation_free);
    CHECK(psr_pipeline_wait(NULL, NULL, 10, &inv, NULL) == PSR_RESULT_NULL_ARGUMENT);

    /* invocations */
    (void)psr_invocation_state(NULL);
    CHECK(!psr_invocation_had_errors(NULL));
    CHECK(psr_invocation_output_count(NULL) == 0);
    CHECK(psr_invocation_output_json(NULL, 0) == NULL);
    CHECK(psr_invocation_output_clixml(NULL, 0) == NULL);
    CHECK(psr_invocation_error_count(NULL) == 0);
    CHECK(psr_invocation_error_message(NULL, 0) == NULL);
    CHECK(psr_invocation_json(NULL) == NULL);

    /* log callback: NULL turns it off (and must not crash) */
    psr_set_log_callback(NULL, NULL, 5);
    psr_set_log_callback(NULL, NULL, 0);

    /* every _free takes NULL */
    psr_error_free(NULL);
    psr_config_free(NULL);
    psr_client_free(NULL);
    psr_cmd_result_free(NULL);
    psr_pool_free(NULL);
    psr_pipeline_free(NULL);
    psr_invocation_free(NULL);
    psr_string_free(NULL);
    CHECK(1); /* reached: no free crashed */

    psr_config_free(cfg);
}

/* NULL inner arguments on live handles. */
static void test_null_arguments_live(psr_client *client, psr_pool *pool) {
    psr_error *err = NULL;
    psr_cmd_result *res = (psr_cmd_result *)SENTINEL;
    psr_pool *p2 = (psr_pool *)SENTINEL;
    psr_pipeline *pl = (psr_pipeline *)SENTINEL;
    psr_invocation *inv = (psr_invocation *)SENTINEL;
    psr_pipeline *live = NULL;
    const char *const args_with_null[2] = {"a", NULL};
    const char *const bad_utf8[1] = {"\xc3\x28"};
    begin("null_arguments_live");
    if (client == NULL || pool == NULL) {
        CHECK(client != NULL && pool != NULL);
        return;
    }
    EXPECT_FAIL(psr_client_connection_info_json(client, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_run_cmd(client, NULL, NULL, 0, NULL, 0, &res, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_run_cmd(client, "echo", NULL, 2, NULL, 0, &res, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_run_cmd(client, "echo", args_with_null, 2, NULL, 0, &res, &err),
                PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_run_cmd(client, "echo", bad_utf8, 1, NULL, 0, &res, &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_client_run_cmd(client, "cat", NULL, 0, NULL, 5, &res, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_run_cmd(client, "echo", NULL, 0, NULL, 0, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);

    EXPECT_FAIL(psr_pool_open(client, NULL, NULL, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(p2, psr_pool, psr_pool_free);
    EXPECT_FAIL(psr_pool_start_script(pool, NULL, false, &pl, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_start_script(pool, "'\xff'", false, &pl, &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_pool_start_script(pool, "1+1", false, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_start_command(pool, NULL, NULL, false, &pl, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_start_command(pool, "Get-Date", NULL, false, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_start_command(pool, "Write-Output", "{not json", false, &pl, &err),
                PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_pool_start_command(pool, "Write-Output", "[1, 2]", false, &pl, &err),
                PSR_RESULT_INVALID_ARGUMENT);
    CHECK_UNTOUCHED(pl, psr_pipeline, psr_pipeline_free);

    if (EXPECT_OK(psr_pool_start_script(pool, "Measure-Input", true, &live, &err))) {
        EXPECT_FAIL(psr_pipeline_send_input_json(live, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
        EXPECT_FAIL(psr_pipeline_send_input_json(live, "{oops", &err), PSR_RESULT_INVALID_ARGUMENT);
        EXPECT_FAIL(psr_pipeline_wait(live, NULL, 0, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
        EXPECT_OK(psr_pipeline_end_input(live, &err));
        if (EXPECT_OK(psr_pipeline_wait(live, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
            CHECK(psr_invocation_output_json(inv, 1) == NULL);
            CHECK(psr_invocation_output_clixml(inv, 99) == NULL);
            CHECK(psr_invocation_error_message(inv, 0) == NULL);
            CHECK(psr_invocation_output_json(inv, (size_t)-1) == NULL);
            psr_invocation_free(inv);
        }
        psr_pipeline_free(live);
    }
}

static void test_bad_config(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    begin("bad_config");
    CHECK(psr_config_new("not a url", USERNAME, PASSWORD) == NULL);
    CHECK(psr_config_new("", USERNAME, PASSWORD) == NULL);
    CHECK(psr_config_new("http://", USERNAME, PASSWORD) == NULL);
    CHECK(psr_config_new(g_url, "\xff\xfe", PASSWORD) == NULL);
    CHECK(psr_config_new(g_url, USERNAME, "bad\xc3\x28") == NULL);

    cfg = psr_config_new(g_url, USERNAME, PASSWORD);
    if (!CHECK(cfg != NULL)) {
        return;
    }
    EXPECT_FAIL(psr_config_set_auth(cfg, "kerberos-please", &err), PSR_RESULT_INVALID_CONFIG);
    CHECK(psr_config_set_auth(cfg, "", NULL) == PSR_RESULT_INVALID_CONFIG);
    EXPECT_OK(psr_config_set_auth(cfg, "ntlm", &err));
    EXPECT_OK(psr_config_set_auth(cfg, "negotiate", &err));
    EXPECT_OK(psr_config_set_auth(cfg, "basic", &err));
    EXPECT_OK(psr_config_set_allow_unencrypted(cfg, true, &err));
    EXPECT_OK(psr_config_set_allow_unencrypted(cfg, false, &err));
    EXPECT_OK(psr_config_set_operation_timeout_ms(cfg, 15000, &err));
    EXPECT_FAIL(psr_config_set_operation_timeout_ms(cfg, 0, &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_operation_timeout_ms(cfg, 999, &err), PSR_RESULT_INVALID_CONFIG);

    /* the security settings: stored as given, checked where they can be */
    EXPECT_OK(psr_config_set_auth(cfg, "kerberos", &err));
    EXPECT_OK(psr_config_set_auth(cfg, "credssp", &err));
    EXPECT_OK(psr_config_set_auth(cfg, "certificate", &err));
    EXPECT_OK(psr_config_set_trusted_hosts(cfg, "a.example, *.corp.example,10.0.0.*,<local>", &err));
    EXPECT_OK(psr_config_set_trusted_hosts(cfg, NULL, &err));
    EXPECT_FAIL(psr_config_set_trusted_hosts(cfg, "bad\xc3\x28", &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_OK(psr_config_set_ca_file(cfg, "ca.pem", &err));
    EXPECT_OK(psr_config_set_ca_file(cfg, NULL, &err));
    EXPECT_OK(psr_config_set_ca_dir(cfg, "/etc/ssl/certs", &err));
    EXPECT_OK(psr_config_set_ca_dir(cfg, NULL, &err));
    EXPECT_OK(psr_config_set_server_name(cfg, "server.example", &err));
    EXPECT_OK(psr_config_set_server_name(cfg, NULL, &err));
    EXPECT_FAIL(psr_config_set_server_name(cfg, " ", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_OK(psr_config_add_pinned_key(cfg, "sha256/00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff", &err));
    EXPECT_OK(psr_config_add_pinned_key(cfg, "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff", &err));
    EXPECT_FAIL(psr_config_add_pinned_key(cfg, "abc", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_add_pinned_key(cfg, "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", &err),
                PSR_RESULT_INVALID_CONFIG);
    EXPECT_OK(psr_config_set_tls_versions(cfg, "1.2", "TLSv1.3", &err));
    EXPECT_OK(psr_config_set_tls_versions(cfg, NULL, NULL, &err));
    EXPECT_FAIL(psr_config_set_tls_versions(cfg, "1.1", NULL, &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_tls_versions(cfg, "1.3", "1.2", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_OK(psr_config_set_insecure_skip_verify(cfg, true, &err));
    EXPECT_OK(psr_config_set_insecure_skip_verify(cfg, false, &err));
    EXPECT_OK(psr_config_set_client_certificate(cfg, "client.pem", "client-key.pem", "secret-key-pass", &err));
    EXPECT_OK(psr_config_set_client_certificate(cfg, "both.pem", NULL, NULL, &err));
    EXPECT_OK(psr_config_set_client_certificate(cfg, NULL, NULL, NULL, &err));
    EXPECT_OK(psr_config_set_message_encryption(cfg, "always", &err));
    EXPECT_OK(psr_config_set_message_encryption(cfg, "AUTO", &err));
    EXPECT_FAIL(psr_config_set_message_encryption(cfg, "never", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_OK(psr_config_set_kerberos(cfg, "kdc.corp.example:88", "WSMAN", "server.corp.example", true, &err));
    EXPECT_OK(psr_config_set_kerberos(cfg, NULL, NULL, NULL, false, &err));
    EXPECT_OK(psr_config_set_audit_arguments(cfg, true, &err));
    EXPECT_OK(psr_config_set_audit_arguments(cfg, false, &err));
    psr_config_free(cfg);
}

/* max_events_ahead pauses a pipeline's Receive loop without losing output; max_reply_size
 * refuses a reply larger than it while it is read. */
static void test_reader_limits(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = NULL;
    psr_pool *pool;
    psr_invocation *inv;
    psr_result rc;
    begin("reader_limits");
    EXPECT_FAIL(psr_config_set_max_events_ahead(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_max_reply_size(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    cfg = make_config(PASSWORD);
    if (!CHECK(cfg != NULL)) {
        return;
    }
    EXPECT_FAIL(psr_config_set_max_events_ahead(cfg, 0, &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_OK(psr_config_set_max_events_ahead(cfg, 1, &err));
    if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        pool = open_pool(client, NULL);
        inv = run_script(pool, "New-TestObject -Count 300 -Size 3", NULL);
        if (CHECK(inv != NULL)) {
            CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
            CHECK(psr_invocation_output_count(inv) == 300);
            psr_invocation_free(inv);
        }
        if (pool != NULL) {
            EXPECT_OK(psr_pool_close(pool, &err));
            psr_pool_free(pool);
        }
        psr_client_free(client);
        client = NULL;
    }
    /* Above what opening a pool brings, below one Receive of 500 objects: the pipeline fails
     * while that reply is read, and closing the pool (whose id the client chose) leaves nothing. */
    EXPECT_OK(psr_config_set_max_reply_size(cfg, 32768, &err));
    if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        pool = open_pool(client, NULL);
        if (pool != NULL) {
            psr_pipeline *pl = NULL;
            inv = NULL;
            if (EXPECT_OK(psr_pool_start_script(pool, "New-TestObject -Count 500 -Size 200", false, &pl, &err))) {
                rc = psr_pipeline_wait(pl, NULL, 0, &inv, &err);
                CHECK(rc == PSR_RESULT_TRANSPORT);
                CHECK(err != NULL && contains(psr_error_message(err), "32768"));
                psr_error_free(err);
                err = NULL;
                psr_invocation_free(inv);
                psr_pipeline_free(pl);
            }
            EXPECT_OK(psr_pool_close(pool, &err));
            psr_pool_free(pool);
        }
        psr_client_free(client);
    }
    CHECK(wait_state("pools", 0, 10000) == 0);
    psr_config_free(cfg);
}

static void test_connect_failures(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = (psr_client *)SENTINEL;
    psr_result rc;
    char url[128];
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int fd;
    begin("connect_failures");

    /* wrong password */
    cfg = make_config("not-the-password");
    if (CHECK(cfg != NULL)) {
        EXPECT_OK(psr_config_set_auth(cfg, "ntlm", &err));
        EXPECT_FAIL(psr_client_connect(cfg, &client, &err), PSR_RESULT_AUTHENTICATION);
        CHECK_UNTOUCHED(client, psr_client, psr_client_free);
        psr_config_free(cfg);
    }

    /* nothing listening: a port that was free a moment ago */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (!CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
               getsockname(fd, (struct sockaddr *)&addr, &alen) == 0)) {
        if (fd >= 0) {
            close(fd);
        }
        return;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%u/wsman", (unsigned)ntohs(addr.sin_port));
    close(fd);
    cfg = psr_config_new(url, USERNAME, PASSWORD);
    if (CHECK(cfg != NULL)) {
        EXPECT_OK(psr_config_set_trusted_hosts(cfg, "127.0.0.1", &err));
        EXPECT_FAIL(psr_client_connect(cfg, &client, &err), PSR_RESULT_CONNECT);
        CHECK_UNTOUCHED(client, psr_client, psr_client_free);
        rc = psr_client_connect(cfg, &client, NULL); /* no error object wanted */
        CHECK(rc == PSR_RESULT_CONNECT);
        psr_config_free(cfg);
    }
}

typedef struct bounded_cmd {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
    psr_client *client;
    const char *exe;
    const uint8_t *stdin_data;
    psr_result rc;
    int stdout_ok;
} bounded_cmd;

static void *bounded_cmd_thread(void *arg) {
    bounded_cmd *b = (bounded_cmd *)arg;
    psr_cmd_result *res = NULL;
    psr_result rc = psr_client_run_cmd(b->client, b->exe, NULL, 0, b->stdin_data, 0, &res, NULL);
    size_t len = 0;
    const uint8_t *data = psr_cmd_result_stdout(res, &len);
    int ok = rc == PSR_RESULT_OK && psr_cmd_result_exit_code(res) == 0 &&
             (strcmp(b->exe, "cat") == 0 ? len == 0 : (data != NULL && len >= 1 && data[0] == '0'));
    psr_cmd_result_free(res);
    pthread_mutex_lock(&b->lock);
    b->rc = rc;
    b->stdout_ok = ok;
    b->done = 1;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* Runs `exe` with an empty stdin (`stdin_data` NULL or not, length 0) on a client of its own;
 * true when it finished within `limit_ms` with exit code 0 and the expected stdout. On a hang
 * the thread, its client and its state are abandoned (deliberately leaked). */
static int bounded_empty_stdin(const char *exe, const uint8_t *stdin_data, unsigned limit_ms) {
    bounded_cmd *b = (bounded_cmd *)calloc(1, sizeof *b);
    pthread_t thread;
    struct timespec deadline;
    int done, ok;
    if (b == NULL) {
        return 0;
    }
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cond, NULL);
    b->client = connect_client();
    b->exe = exe;
    b->stdin_data = stdin_data;
    if (b->client == NULL || pthread_create(&thread, NULL, bounded_cmd_thread, b) != 0) {
        psr_client_free(b->client);
        free(b);
        return 0;
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)(limit_ms / 1000u);
    pthread_mutex_lock(&b->lock);
    while (!b->done) {
        if (pthread_cond_timedwait(&b->cond, &b->lock, &deadline) != 0) {
            break;
        }
    }
    done = b->done;
    ok = done && b->stdout_ok;
    pthread_mutex_unlock(&b->lock);
    if (!done) {
        printf("       psr_client_run_cmd(\"%s\") with an empty stdin did not finish within %u ms\n", exe, limit_ms);
        pthread_detach(thread);
        return 0;
    }
    pthread_join(thread, NULL);
    psr_client_free(b->client);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cond);
    free(b);
    return ok;
}

static void test_cmd(psr_client *client) {
    psr_error *err = NULL;
    psr_cmd_result *res = NULL;
    const char *const echo_args[1] = {"hello"};
    const char *const exit_args[1] = {"3"};
    const uint8_t input[] = {'l', 'i', 'n', 'e', '1', '\n', 'b', 0, 'c', '\n'};
    const uint8_t *data;
    size_t len;
    begin("cmd");
    if (!CHECK(client != NULL)) {
        return;
    }
    if (EXPECT_OK(psr_client_run_cmd(client, "echo", echo_args, 1, NULL, 0, &res, &err))) {
        data = psr_cmd_result_stdout(res, &len);
        CHECK(data != NULL && len == 6 && memcmp(data, "hello\n", 6) == 0);
        data = psr_cmd_result_stderr(res, &len);
        CHECK(len == 0);
        CHECK(psr_cmd_result_exit_code(res) == 0);
        psr_cmd_result_free(res);
    }
    res = NULL;
    if (EXPECT_OK(psr_client_run_cmd(client, "exit", exit_args, 1, NULL, 0, &res, &err))) {
        CHECK(psr_cmd_result_exit_code(res) == 3);
        psr_cmd_result_free(res);
    }
    res = NULL;
    if (EXPECT_OK(psr_client_run_cmd(client, "echo oops 1>&2", NULL, 0, NULL, 0, &res, &err))) {
        data = psr_cmd_result_stderr(res, &len);
        CHECK(data != NULL && len == 5 && memcmp(data, "oops\n", 5) == 0);
        data = psr_cmd_result_stdout(res, &len);
        CHECK(len == 0);
        psr_cmd_result_free(res);
    }
    /* stdin, binary-safe (a NUL in the middle) */
    res = NULL;
    if (EXPECT_OK(psr_client_run_cmd(client, "cat", NULL, 0, input, sizeof input, &res, &err))) {
        data = psr_cmd_result_stdout(res, &len);
        CHECK(data != NULL && len == sizeof input && memcmp(data, input, sizeof input) == 0);
        CHECK(psr_cmd_result_exit_code(res) == 0);
        psr_cmd_result_free(res);
    }
    /* no stdin: stdin is closed all the same, so a command reading it ends (with a watchdog, so
     * that a hang fails this check instead of the whole run) */
    CHECK(bounded_empty_stdin("cat", NULL, 10000));
    CHECK(bounded_empty_stdin("wc -c", input, 10000));
}

/* ------------------------------------------------------------------------------------------ */
/* cmd shells: options, streaming output, stdin in pieces, Ctrl-C, terminate, faults           */
/* ------------------------------------------------------------------------------------------ */

#define CMD_LONG "echo started; sleep 600"
#define CMD_SIGINT_EXIT 130 /* the endpoint reports 128 + signal, as a POSIX shell would */
#define CMD_SIGKILL_EXIT 137
#define CMD_INVALID_SELECTORS 2150858843u

/* Reads chunks until `want` bytes of stdout have arrived; 1 when they equal `want`. */
static int cmd_read_stdout(psr_cmd_process *p, const char *want) {
    char got[256];
    size_t have = 0, need = strlen(want), len = 0;
    psr_error *err = NULL;
    while (have < need) {
        psr_cmd_chunk *chunk = NULL;
        const uint8_t *data;
        if (!EXPECT_OK(psr_cmd_process_read(p, 30000, &chunk, &err)) || !CHECK(chunk != NULL)) {
            return 0;
        }
        data = psr_cmd_chunk_data(chunk, &len);
        if (psr_cmd_chunk_stream(chunk) == PSR_CMD_STREAM_STDOUT && data != NULL && have + len < sizeof got) {
            memcpy(got + have, data, len);
            have += len;
        }
        psr_cmd_chunk_free(chunk);
    }
    return have == need && memcmp(got, want, need) == 0;
}

/* Waits for the end; 1 when stdout equals `want_stdout` (NULL: anything) and the exit code is `want_code`. */
static int cmd_wait(psr_cmd_process *p, const char *want_stdout, int64_t want_code) {
    psr_cmd_result *res = NULL;
    psr_error *err = NULL;
    const uint8_t *data;
    size_t len = 0;
    int64_t code = -1;
    int ok;
    if (!EXPECT_OK(psr_cmd_process_wait(p, 0, &res, &err))) {
        return 0;
    }
    data = psr_cmd_result_stdout(res, &len);
    ok = want_stdout == NULL || (len == strlen(want_stdout) && (len == 0 || memcmp(data, want_stdout, len) == 0));
    if (!ok) {
        printf("       stdout was \"%.*s\"\n", (int)len, data != NULL ? (const char *)data : "");
    }
    ok &= psr_cmd_result_exit_code(res) == want_code;
    ok &= psr_cmd_process_exit_code(p, &code) && code == want_code;
    psr_cmd_result_free(res);
    return ok;
}

typedef struct cmd_reader {
    psr_cmd_process *process;
    int chunks;
    psr_result rc;
} cmd_reader;

static void *cmd_reader_thread(void *arg) {
    cmd_reader *r = (cmd_reader *)arg;
    for (;;) {
        psr_cmd_chunk *chunk = NULL;
        r->rc = psr_cmd_process_read(r->process, 0, &chunk, NULL);
        if (r->rc != PSR_RESULT_OK || chunk == NULL) {
            return NULL;
        }
        r->chunks++;
        psr_cmd_chunk_free(chunk);
    }
}

static void test_cmd_shell_misuse(psr_client *client) {
    psr_error *err = NULL;
    psr_cmd_shell_options *opts = psr_cmd_shell_options_new();
    psr_cmd_shell *shell = (psr_cmd_shell *)SENTINEL;
    psr_cmd_process *process = (psr_cmd_process *)SENTINEL;
    psr_cmd_chunk *chunk = (psr_cmd_chunk *)SENTINEL;
    psr_cmd_result *res = (psr_cmd_result *)SENTINEL;
    int64_t code = 42;
    size_t len = 7;
    begin("cmd_shell_misuse");
    CHECK(opts != NULL);
    EXPECT_FAIL(psr_cmd_shell_options_add_environment(NULL, "A", "1", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_options_add_environment(opts, NULL, "1", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_options_add_environment(opts, "", "1", &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_options_add_environment(opts, "A", "\xff", &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_options_set_working_directory(NULL, "/", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_OK(psr_cmd_shell_options_set_working_directory(opts, NULL, &err));
    EXPECT_FAIL(psr_cmd_shell_options_set_codepage(NULL, 437, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_options_set_no_profile(NULL, true, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_options_set_idle_timeout_ms(NULL, 1000, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_cmd_shell_open(NULL, opts, &shell, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(shell, psr_cmd_shell, psr_cmd_shell_free);
    EXPECT_FAIL(psr_client_cmd_shell_open(client, opts, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_start(NULL, "true", NULL, 0, false, &process, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(process, psr_cmd_process, psr_cmd_process_free);
    EXPECT_FAIL(psr_cmd_process_read(NULL, 0, &chunk, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(chunk, psr_cmd_chunk, psr_cmd_chunk_free);
    EXPECT_FAIL(psr_cmd_process_wait(NULL, 0, &res, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);
    EXPECT_FAIL(psr_cmd_process_send_stdin(NULL, NULL, 0, true, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_process_ctrl_c(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_process_terminate(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_cmd_shell_close(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(!psr_cmd_process_exit_code(NULL, &code) && code == 42);
    CHECK(psr_cmd_shell_id(NULL) == NULL);
    CHECK(psr_cmd_process_id(NULL) == NULL);
    CHECK(psr_cmd_chunk_data(NULL, &len) == NULL && len == 7);
    CHECK(psr_cmd_chunk_stream(NULL) == PSR_CMD_STREAM_STDOUT);
    psr_cmd_shell_options_free(NULL);
    psr_cmd_shell_free(NULL);
    psr_cmd_process_free(NULL);
    psr_cmd_chunk_free(NULL);

    /* a live shell: bad arguments, then use after close */
    shell = NULL;
    if (EXPECT_OK(psr_client_cmd_shell_open(client, NULL, &shell, &err))) {
        const char *const bad_args[1] = {NULL};
        process = (psr_cmd_process *)SENTINEL;
        CHECK(psr_cmd_shell_id(shell) != NULL && strlen(psr_cmd_shell_id(shell)) == 36);
        EXPECT_FAIL(psr_cmd_shell_start(shell, "echo", NULL, 1, false, &process, &err), PSR_RESULT_NULL_ARGUMENT);
        EXPECT_FAIL(psr_cmd_shell_start(shell, "echo", bad_args, 1, false, &process, &err), PSR_RESULT_NULL_ARGUMENT);
        EXPECT_FAIL(psr_cmd_shell_start(shell, NULL, NULL, 0, false, &process, &err), PSR_RESULT_NULL_ARGUMENT);
        EXPECT_FAIL(psr_cmd_shell_start(shell, "true", NULL, 0, false, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
        CHECK_UNTOUCHED(process, psr_cmd_process, psr_cmd_process_free);
        process = NULL;
        if (EXPECT_OK(psr_cmd_shell_start(shell, "cat", NULL, 0, false, &process, &err))) {
            EXPECT_FAIL(psr_cmd_process_send_stdin(process, NULL, 3, false, &err), PSR_RESULT_NULL_ARGUMENT);
            EXPECT_FAIL(psr_cmd_process_read(process, 0, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
            EXPECT_OK(psr_cmd_process_send_stdin(process, NULL, 0, true, &err));
            CHECK(cmd_wait(process, "", 0));
            /* after the end: stdin is closed for good, Ctrl-C and terminate have nothing to do */
            EXPECT_FAIL(psr_cmd_process_send_stdin(process, (const uint8_t *)"x", 1, false, &err), PSR_RESULT_CLOSED);
            EXPECT_OK(psr_cmd_process_ctrl_c(process, &err));
            EXPECT_OK(psr_cmd_process_terminate(process, &err));
            chunk = (psr_cmd_chunk *)SENTINEL;
            EXPECT_OK(psr_cmd_process_read(process, 0, &chunk, &err));
            CHECK(chunk == NULL);
            psr_cmd_process_free(process);
        }
        EXPECT_OK(psr_cmd_shell_close(shell, &err));
        EXPECT_FAIL(psr_cmd_shell_close(shell, &err), PSR_RESULT_CLOSED);
        process = (psr_cmd_process *)SENTINEL;
        EXPECT_FAIL(psr_cmd_shell_start(shell, "true", NULL, 0, false, &process, &err), PSR_RESULT_CLOSED);
        CHECK_UNTOUCHED(process, psr_cmd_process, psr_cmd_process_free);
        psr_cmd_shell_free(shell);
    }
    psr_cmd_shell_options_free(opts);
}

static void test_cmd_shell(psr_client *client) {
    psr_error *err = NULL;
    psr_cmd_shell_options *opts;
    psr_cmd_shell *shell = NULL;
    psr_cmd_process *p = NULL;
    psr_cmd_chunk *chunk;
    long shells0, commands0;
    int64_t code = -1;
    const char *const home_args[1] = {"$HOME"};
    begin("cmd_shell");
    if (!CHECK(client != NULL)) {
        return;
    }
    shells0 = settled_state("shells");
    commands0 = settled_state("commands");

    /* options reach the command: environment, working directory; the others are accepted */
    opts = psr_cmd_shell_options_new();
    EXPECT_OK(psr_cmd_shell_options_add_environment(opts, "PSR_C", "c-v\xc3\xa4lue", &err));
    EXPECT_OK(psr_cmd_shell_options_add_environment(opts, "PSR_D", "d", &err));
    EXPECT_OK(psr_cmd_shell_options_set_working_directory(opts, "/", &err));
    EXPECT_OK(psr_cmd_shell_options_set_codepage(opts, 437, &err));
    EXPECT_OK(psr_cmd_shell_options_set_codepage(opts, 65001, &err));
    EXPECT_OK(psr_cmd_shell_options_set_no_profile(opts, true, &err));
    EXPECT_OK(psr_cmd_shell_options_set_idle_timeout_ms(opts, 90000, &err));
    if (!EXPECT_OK(psr_client_cmd_shell_open(client, opts, &shell, &err))) {
        psr_cmd_shell_options_free(opts);
        return;
    }
    psr_cmd_shell_options_free(opts); /* copied by the open */
    CHECK(wait_state("shells", shells0 + 1, 5000) == shells0 + 1);
    if (EXPECT_OK(psr_cmd_shell_start(shell, "echo \"$PSR_C$PSR_D\"; pwd", NULL, 0, false, &p, &err))) {
        CHECK(cmd_wait(p, "c-v\xc3\xa4lued\n/\n", 0));
        psr_cmd_process_free(p);
    }

    /* WINRS_SKIP_CMD_SHELL: the program gets its argument as it is, no shell expands it */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, "echo", home_args, 1, true, &p, &err))) {
        CHECK(cmd_wait(p, "$HOME\n", 0));
        psr_cmd_process_free(p);
    }

    /* output streams before the end: the command cannot end before it reads its input; stdin
     * in several pieces */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, "echo first; read a; read b; echo \"$a$b\"; exit 4", NULL, 0, false,
                                      &p, &err))) {
        CHECK(cmd_read_stdout(p, "first\n"));
        CHECK(!psr_cmd_process_exit_code(p, &code));
        EXPECT_OK(psr_cmd_process_send_stdin(p, (const uint8_t *)"pie", 3, false, &err));
        EXPECT_OK(psr_cmd_process_send_stdin(p, (const uint8_t *)"ce\n", 3, false, &err));
        EXPECT_OK(psr_cmd_process_send_stdin(p, (const uint8_t *)"meal\n", 5, true, &err));
        CHECK(cmd_wait(p, "piecemeal\n", 4));
        psr_cmd_process_free(p);
    }

    /* a read or a wait that times out loses nothing */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, "echo before; read x; echo \"after $x\"", NULL, 0, false, &p, &err))) {
        psr_cmd_result *res = (psr_cmd_result *)SENTINEL;
        EXPECT_FAIL(psr_cmd_process_wait(p, 300, &res, &err), PSR_RESULT_TIMEOUT);
        CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);
        chunk = (psr_cmd_chunk *)SENTINEL;
        EXPECT_FAIL(psr_cmd_process_read(p, 200, &chunk, &err), PSR_RESULT_TIMEOUT);
        CHECK_UNTOUCHED(chunk, psr_cmd_chunk, psr_cmd_chunk_free);
        EXPECT_OK(psr_cmd_process_send_stdin(p, (const uint8_t *)"now\n", 4, true, &err));
        CHECK(cmd_wait(p, "before\nafter now\n", 0));
        psr_cmd_process_free(p);
    }

    /* Ctrl-C ends a long-running command */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, CMD_LONG, NULL, 0, false, &p, &err))) {
        CHECK(cmd_read_stdout(p, "started\n"));
        EXPECT_OK(psr_cmd_process_ctrl_c(p, &err));
        CHECK(cmd_wait(p, "", CMD_SIGINT_EXIT));
        psr_cmd_process_free(p);
    }

    /* terminate ends it at once and releases it; the output ends, no exit code */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, CMD_LONG, NULL, 0, false, &p, &err))) {
        psr_cmd_result *res = (psr_cmd_result *)SENTINEL;
        CHECK(cmd_read_stdout(p, "started\n"));
        CHECK(wait_state("commands", commands0 + 1, 5000) == commands0 + 1);
        EXPECT_OK(psr_cmd_process_terminate(p, &err));
        CHECK(wait_state("commands", commands0, 5000) == commands0);
        chunk = (psr_cmd_chunk *)SENTINEL;
        EXPECT_OK(psr_cmd_process_read(p, 0, &chunk, &err));
        CHECK(chunk == NULL);
        CHECK(!psr_cmd_process_exit_code(p, &code));
        EXPECT_FAIL(psr_cmd_process_wait(p, 0, &res, &err), PSR_RESULT_CLOSED);
        CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);
        EXPECT_FAIL(psr_cmd_process_send_stdin(p, (const uint8_t *)"x", 1, false, &err), PSR_RESULT_CLOSED);
        EXPECT_OK(psr_cmd_process_terminate(p, &err)); /* again: nothing to do */
        psr_cmd_process_free(p);
    }

    /* terminate from this thread while another one is blocked reading */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, "sleep 600", NULL, 0, false, &p, &err))) {
        cmd_reader r;
        pthread_t thread;
        memset(&r, 0, sizeof r);
        r.process = p;
        if (CHECK(pthread_create(&thread, NULL, cmd_reader_thread, &r) == 0)) {
            EXPECT_OK(psr_cmd_process_terminate(p, &err));
            pthread_join(thread, NULL);
            CHECK(r.rc == PSR_RESULT_OK && r.chunks == 0);
            /* a Receive under way may have seen the kill: the endpoint then reports 128 + 9 */
            code = -1;
            CHECK(!psr_cmd_process_exit_code(p, &code) || code == CMD_SIGKILL_EXIT);
        }
        psr_cmd_process_free(p);
    }

    /* a running command freed without waiting is released in the background */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, CMD_LONG, NULL, 0, false, &p, &err))) {
        psr_cmd_process_free(p);
    }
    CHECK(wait_state("commands", commands0, 10000) == commands0);

    /* the shell deleted underneath a running command: the server's fault, with its code */
    p = NULL;
    if (EXPECT_OK(psr_cmd_shell_start(shell, CMD_LONG, NULL, 0, false, &p, &err))) {
        CHECK(cmd_read_stdout(p, "started\n"));
        EXPECT_OK(psr_cmd_shell_close(shell, &err));
        CHECK(psr_cmd_process_send_stdin(p, (const uint8_t *)"x", 1, false, &err) == PSR_RESULT_FAULT);
        CHECK(psr_error_fault_code(err) == CMD_INVALID_SELECTORS);
        psr_error_free(err);
        err = NULL;
        chunk = (psr_cmd_chunk *)SENTINEL;
        /* a read names it: the server does not know the command any more */
        CHECK(psr_cmd_process_read(p, 0, &chunk, &err) == PSR_RESULT_NOT_FOUND);
        CHECK(err != NULL && psr_error_code(err) == PSR_RESULT_NOT_FOUND);
        CHECK(psr_error_fault_code(err) == CMD_INVALID_SELECTORS);
        psr_error_free(err);
        err = NULL;
        CHECK_UNTOUCHED(chunk, psr_cmd_chunk, psr_cmd_chunk_free);
        /* a failed read released the command: stdin is closed for good now */
        EXPECT_FAIL(psr_cmd_process_send_stdin(p, (const uint8_t *)"x", 1, false, &err), PSR_RESULT_CLOSED);
        psr_cmd_process_free(p);
    }
    psr_cmd_shell_free(shell);

    /* a shell freed without closing is deleted in the background */
    shell = NULL;
    if (EXPECT_OK(psr_client_cmd_shell_open(client, NULL, &shell, &err))) {
        psr_cmd_shell_free(shell);
    }
    CHECK(wait_state("shells", shells0, 10000) == shells0);
    CHECK(wait_state("commands", commands0, 10000) == commands0);
}

static void test_streams(psr_pool *pool) {
    collector col;
    psr_invocation *inv;
    const char *json;
    begin("streams");
    collector_init(&col);
    inv = run_script(pool,
                     "Write-Output 'out1'; Write-Error 'err1'; Write-Warning 'warn1'; Write-Verbose 'verb1'; "
                     "Write-Debug 'dbg1'; Write-Information 'info1'; "
                     "Write-Progress -Activity 'act1' -Status 'stat1' -PercentComplete 42; Write-Output 'out2'",
                     &col);
    if (!CHECK(inv != NULL)) {
        collector_clear(&col);
        return;
    }
    /* callbacks, all on the thread that called psr_pipeline_wait */
    CHECK(col.calls_off_thread == 0);
    CHECK(col.outputs == 2);
    CHECK(col.outputs >= 2 && json_equals(col.output_json[0], "\"out1\"") &&
          json_equals(col.output_json[1], "\"out2\""));
    CHECK(col.outputs >= 1 && contains(col.output_clixml[0], "<S>out1</S>"));
    CHECK(col.records[PSR_STREAM_ERROR] == 1 && contains(col.last_record[PSR_STREAM_ERROR], "err1"));
    CHECK(col.records[PSR_STREAM_WARNING] == 1 && contains(col.last_record[PSR_STREAM_WARNING], "warn1"));
    CHECK(col.records[PSR_STREAM_VERBOSE] == 1 && contains(col.last_record[PSR_STREAM_VERBOSE], "verb1"));
    CHECK(col.records[PSR_STREAM_DEBUG] == 1 && contains(col.last_record[PSR_STREAM_DEBUG], "dbg1"));
    CHECK(col.records[PSR_STREAM_INFORMATION] == 1 && contains(col.last_record[PSR_STREAM_INFORMATION], "info1"));
    CHECK(col.records[0] == 0);
    CHECK(col.progress == 1 && contains(col.activity, "act1") && contains(col.status, "stat1") &&
          col.percent == 42);

    /* the invocation */
    CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
    CHECK(psr_invocation_had_errors(inv));
    CHECK(psr_invocation_output_count(inv) == 2);
    CHECK(json_equals(psr_invocation_output_json(inv, 0), "\"out1\""));
    CHECK(json_equals(psr_invocation_output_json(inv, 1), "\"out2\""));
    CHECK(contains(psr_invocation_output_clixml(inv, 1), "out2"));
    CHECK(psr_invocation_error_count(inv) == 1);
    CHECK(contains(psr_invocation_error_message(inv, 0), "err1"));
    json = psr_invocation_json(inv);
    CHECK(json_valid(json));
    CHECK(json_contains(json, "\"state\":\"Completed\""));
    CHECK(json_contains(json, "\"had_errors\":true"));
    CHECK(json_contains(json, "\"output\":[\"out1\",\"out2\"]"));
    CHECK(json_contains(json, "\"errors\":[{"));
    CHECK(json_contains(json, "\"message\":\"err1\""));
    CHECK(json_contains(json, "\"id\":"));
    CHECK(json_contains(json, "\"warnings\":[") && contains(json, "warn1"));
    CHECK(json_contains(json, "\"verbose\":[") && contains(json, "verb1"));
    CHECK(json_contains(json, "\"debug\":[") && contains(json, "dbg1"));
    CHECK(json_contains(json, "\"information\":[") && contains(json, "info1"));
    if (g_verbose) {
        printf("    invocation json: %s\n", json != NULL ? json : "(null)");
    }
    CHECK(psr_invocation_json(inv) == json); /* owned by the invocation, stable */
    psr_invocation_free(inv);
    collector_clear(&col);

    /* waiting without callbacks, and with every member NULL */
    inv = run_script(pool, "Write-Warning 'w'; 2 * 3", NULL);
    if (CHECK(inv != NULL)) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED && !psr_invocation_had_errors(inv));
        CHECK(psr_invocation_output_count(inv) == 1 && json_equals(psr_invocation_output_json(inv, 0), "6"));
        psr_invocation_free(inv);
    }
    {
        psr_callbacks empty;
        psr_pipeline *pl = NULL;
        psr_error *err = NULL;
        memset(&empty, 0, sizeof empty);
        if (EXPECT_OK(psr_pool_start_script(pool, "Write-Error 'e'; Write-Progress -Activity a; 'x'", false, &pl,
                                            &err))) {
            inv = NULL;
            if (EXPECT_OK(psr_pipeline_wait(pl, &empty, 0, &inv, &err))) {
                CHECK(psr_invocation_output_count(inv) == 1 && psr_invocation_error_count(inv) == 1);
                psr_invocation_free(inv);
            }
            psr_pipeline_free(pl);
        }
    }
}

static void test_output_values(psr_pool *pool) {
    collector col;
    psr_invocation *inv;
    const char *json;
    const char *clixml;
    begin("output_values");
    collector_init(&col);

    inv = run_script(pool, "Write-Output 42; Write-Output 'hello'; New-TestObject -Count 1 -Properties 3 -Size 5",
                     &col);
    if (!CHECK(inv != NULL)) {
        collector_clear(&col);
        return;
    }
    CHECK(psr_invocation_output_count(inv) == 3);
    CHECK(col.outputs == 3);
    /* int */
    CHECK(json_equals(psr_invocation_output_json(inv, 0), "42"));
    CHECK(contains(psr_invocation_output_clixml(inv, 0), "<I32>42</I32>"));
    /* string */
    CHECK(json_equals(psr_invocation_output_json(inv, 1), "\"hello\""));
    CHECK(contains(psr_invocation_output_clixml(inv, 1), "<S>hello</S>"));
    /* object */
    json = psr_invocation_output_json(inv, 2);
    clixml = psr_invocation_output_clixml(inv, 2);
    if (g_verbose) {
        printf("    object json: %s\n    object clixml: %s\n", json != NULL ? json : "(null)",
               clixml != NULL ? clixml : "(null)");
    }
    CHECK(json_valid(json));
    CHECK(json != NULL && json_ws(json)[0] == '{');
    CHECK(json_contains(json, "\"$types\":[\"System.Management.Automation.PSCustomObject\""));
    CHECK(json_contains(json, "\"$toString\":\"@{Property1=abcde; Property2=abcde; Property3=abcde}\""));
    CHECK(json_contains(json, "\"Property1\":\"abcde\""));
    CHECK(json_contains(json, "\"Property2\":\"abcde\""));
    CHECK(json_contains(json, "\"Property3\":\"abcde\""));
    CHECK(contains(clixml, "<Obj") && contains(clixml, "Property3") && contains(clixml, "abcde"));
    CHECK(contains(clixml, "System.Management.Automation.PSCustomObject"));
    /* the callbacks saw the same values */
    CHECK(col.outputs == 3 && json_equals(col.output_json[0], "42") && json_equals(col.output_json[2], json));
    CHECK(col.outputs == 3 && col.output_clixml[2] != NULL && clixml != NULL &&
          strcmp(col.output_clixml[2], clixml) == 0);
    CHECK(json_valid(psr_invocation_json(inv)));
    psr_invocation_free(inv);
    collector_clear(&col);

    /* more of the mapping: bool, null, double, list, a larger integer */
    inv = run_script(pool, "Write-Output $true; Write-Output $null; 7 / 2; Write-Output 1,2 -NoEnumerate; 3000000000",
                     NULL);
    if (CHECK(inv != NULL)) {
        size_t n = psr_invocation_output_count(inv);
        CHECK(n == 5);
        if (n == 5) {
            CHECK(json_equals(psr_invocation_output_json(inv, 0), "true"));
            CHECK(json_equals(psr_invocation_output_json(inv, 1), "null"));
            CHECK(json_equals(psr_invocation_output_json(inv, 2), "3.5"));
            CHECK(json_equals(psr_invocation_output_json(inv, 3), "[1,2]"));
            CHECK(json_equals(psr_invocation_output_json(inv, 4), "3000000000"));
        }
        psr_invocation_free(inv);
    }
}

static void test_start_command(psr_pool *pool) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_invocation *inv = NULL;
    begin("start_command");
    if (!CHECK(pool != NULL)) {
        return;
    }
    /* named parameter with a list value */
    if (EXPECT_OK(psr_pool_start_command(pool, "Write-Output", "{\"InputObject\": [1, \"two\", 3.5]}", false, &pl,
                                         &err))) {
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_output_count(inv) == 3);
            CHECK(json_equals(psr_invocation_output_json(inv, 0), "1"));
            CHECK(json_equals(psr_invocation_output_json(inv, 1), "\"two\""));
            CHECK(json_equals(psr_invocation_output_json(inv, 2), "3.5"));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
    /* a JSON null is a switch */
    pl = NULL;
    inv = NULL;
    if (EXPECT_OK(psr_pool_start_command(pool, "Write-Output", "{\"InputObject\": [1, 2], \"NoEnumerate\": null}",
                                         false, &pl, &err))) {
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_output_count(inv) == 1);
            CHECK(json_equals(psr_invocation_output_json(inv, 0), "[1,2]"));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
    /* positional arguments */
    pl = NULL;
    inv = NULL;
    if (EXPECT_OK(psr_pool_start_command(pool, "Write-Output", "{\"\": [\"a\", \"b\"]}", false, &pl, &err))) {
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_output_count(inv) == 2);
            CHECK(json_equals(psr_invocation_output_json(inv, 0), "\"a\""));
            CHECK(json_equals(psr_invocation_output_json(inv, 1), "\"b\""));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
    /* several named parameters */
    pl = NULL;
    inv = NULL;
    if (EXPECT_OK(psr_pool_start_command(pool, "New-TestObject", "{\"Count\": 2, \"Properties\": 1, \"Size\": 3}",
                                         false, &pl, &err))) {
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_output_count(inv) == 2);
            CHECK(json_contains(psr_invocation_output_json(inv, 1), "\"Property1\":\"abc\""));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
    /* no parameters, and an unknown command (a command, not a script: the pipeline fails) */
    pl = NULL;
    inv = NULL;
    if (EXPECT_OK(psr_pool_start_command(pool, "Get-NoSuchThing", NULL, false, &pl, &err))) {
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_state(inv) == PSR_STATE_FAILED);
            CHECK(psr_invocation_error_count(inv) >= 1 &&
                  contains(psr_invocation_error_message(inv, 0), "Get-NoSuchThing"));
            CHECK(json_contains(psr_invocation_json(inv), "\"id\":\"CommandNotFoundException\""));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
}

static void test_pipeline_input(psr_pool *pool) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_invocation *inv = NULL;
    begin("pipeline_input");
    if (!CHECK(pool != NULL)) {
        return;
    }
    if (EXPECT_OK(psr_pool_start_command(pool, "Measure-Input", NULL, true, &pl, &err))) {
        EXPECT_OK(psr_pipeline_send_input_json(pl, "1", &err));
        EXPECT_OK(psr_pipeline_send_input_json(pl, "\"two\"", &err));
        EXPECT_OK(psr_pipeline_send_input_json(pl, "{\"a\": [1, 2, {\"b\": null}], \"c\": true}", &err));
        EXPECT_OK(psr_pipeline_end_input(pl, &err));
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
            CHECK(psr_invocation_output_count(inv) == 1);
            CHECK(json_contains(psr_invocation_output_json(inv, 0), "\"Count\":3"));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
    /* a script with input: echoed back by Write-Output */
    pl = NULL;
    inv = NULL;
    if (EXPECT_OK(psr_pool_start_script(pool, "Write-Output", true, &pl, &err))) {
        EXPECT_OK(psr_pipeline_send_input_json(pl, "\"x\"", &err));
        EXPECT_OK(psr_pipeline_send_input_json(pl, "17", &err));
        EXPECT_OK(psr_pipeline_end_input(pl, &err));
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(psr_invocation_output_count(inv) == 2);
            CHECK(json_equals(psr_invocation_output_json(inv, 0), "\"x\""));
            CHECK(json_equals(psr_invocation_output_json(inv, 1), "17"));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
    /* no input at all */
    pl = NULL;
    inv = NULL;
    if (EXPECT_OK(psr_pool_start_command(pool, "Measure-Input", NULL, true, &pl, &err))) {
        EXPECT_OK(psr_pipeline_end_input(pl, &err));
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
            CHECK(json_contains(psr_invocation_output_json(inv, 0), "\"Count\":0"));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }
}

static void test_failure(psr_pool *pool) {
    psr_invocation *inv;
    begin("failure");
    inv = run_script(pool, "Write-Output 'before'; Invoke-Failure 'boom-from-c'; Write-Output 'after'", NULL);
    if (!CHECK(inv != NULL)) {
        return;
    }
    CHECK(psr_invocation_state(inv) == PSR_STATE_FAILED);
    CHECK(psr_invocation_had_errors(inv));
    CHECK(psr_invocation_output_count(inv) == 1 && json_equals(psr_invocation_output_json(inv, 0), "\"before\""));
    CHECK(psr_invocation_error_count(inv) >= 1 && contains(psr_invocation_error_message(inv, 0), "boom-from-c"));
    CHECK(json_contains(psr_invocation_json(inv), "\"state\":\"Failed\""));
    CHECK(json_contains(psr_invocation_json(inv), "\"id\":\"boom-from-c\""));
    /* the terminating error is the last one, with its FullyQualifiedErrorId */
    CHECK(psr_invocation_error_id(inv, psr_invocation_error_count(inv) - 1) != NULL &&
          strcmp(psr_invocation_error_id(inv, psr_invocation_error_count(inv) - 1), "boom-from-c") == 0);
    CHECK(psr_invocation_error_id(inv, psr_invocation_error_count(inv)) == NULL);
    psr_invocation_free(inv);
}

static void test_callback_error(psr_pool *pool) {
    collector col;
    psr_callbacks cb;
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_invocation *inv = (psr_invocation *)SENTINEL;
    begin("callback_error");
    if (!CHECK(pool != NULL)) {
        return;
    }
    /* output callback fails at the first object; the pipeline would otherwise never end */
    collector_init(&col);
    col.fail_output_at = 1;
    cb = callbacks_for(&col);
    if (EXPECT_OK(psr_pool_start_script(pool, "Write-Output 1; Write-Output 2; Invoke-Stall", false, &pl, &err))) {
        EXPECT_FAIL(psr_pipeline_wait(pl, &cb, 0, &inv, &err), PSR_RESULT_CALLBACK);
        CHECK_UNTOUCHED(inv, psr_invocation, psr_invocation_free);
        CHECK(col.outputs == 1);
        /* the pipeline was stopped on the server */
        CHECK(wait_state("pipelines_running", 0, 10000) == 0);
        psr_pipeline_free(pl);
    }
    collector_clear(&col);

    /* record callback fails */
    collector_init(&col);
    col.fail_records = 1;
    cb = callbacks_for(&col);
    pl = NULL;
    if (EXPECT_OK(psr_pool_start_script(pool, "Write-Warning 'w'; Invoke-Stall", false, &pl, &err))) {
        EXPECT_FAIL(psr_pipeline_wait(pl, &cb, 0, &inv, &err), PSR_RESULT_CALLBACK);
        CHECK_UNTOUCHED(inv, psr_invocation, psr_invocation_free);
        CHECK(col.records[PSR_STREAM_WARNING] == 1);
        CHECK(wait_state("pipelines_running", 0, 10000) == 0);
        psr_pipeline_free(pl);
    }
    collector_clear(&col);

    /* progress callback fails */
    collector_init(&col);
    col.fail_progress = 1;
    cb = callbacks_for(&col);
    pl = NULL;
    if (EXPECT_OK(psr_pool_start_script(pool, "Write-Progress -Activity 'a' -Status 's'; Invoke-Stall", false, &pl,
                                        &err))) {
        EXPECT_FAIL(psr_pipeline_wait(pl, &cb, 0, &inv, &err), PSR_RESULT_CALLBACK);
        CHECK_UNTOUCHED(inv, psr_invocation, psr_invocation_free);
        CHECK(col.progress == 1);
        CHECK(wait_state("pipelines_running", 0, 10000) == 0);
        psr_pipeline_free(pl);
    }
    collector_clear(&col);
}

typedef struct stopper {
    psr_pipeline *pl;
    unsigned delay_ms;
    psr_result rc;
    int on_main_thread;
} stopper;

static void *stop_thread(void *arg) {
    stopper *s = (stopper *)arg;
    psr_error *err = NULL;
    sleep_ms(s->delay_ms);
    s->on_main_thread = pthread_equal(pthread_self(), g_main_thread) ? 1 : 0;
    s->rc = psr_pipeline_stop(s->pl, &err);
    if (s->rc != PSR_RESULT_OK) {
        note_error("psr_pipeline_stop from a second thread", err);
    }
    psr_error_free(err);
    return NULL;
}

static void test_stop_from_thread(psr_pool *pool) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_invocation *inv = NULL;
    collector col;
    psr_callbacks cb;
    stopper s;
    pthread_t thread;
    uint64_t started;
    begin("stop_from_thread");
    if (!CHECK(pool != NULL)) {
        return;
    }
    collector_init(&col);
    cb = callbacks_for(&col);
    if (!EXPECT_OK(psr_pool_start_script(pool, "Write-Output 'started'; Invoke-Stall", false, &pl, &err))) {
        return;
    }
    memset(&s, 0, sizeof s);
    s.pl = pl;
    s.delay_ms = 500;
    s.rc = PSR_RESULT_PANIC;
    started = now_ms();
    if (!CHECK(pthread_create(&thread, NULL, stop_thread, &s) == 0)) {
        psr_pipeline_free(pl);
        return;
    }
    if (EXPECT_OK(psr_pipeline_wait(pl, &cb, 0, &inv, &err))) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_STOPPED);
        CHECK(json_contains(psr_invocation_json(inv), "\"state\":\"Stopped\""));
        psr_invocation_free(inv);
    }
    CHECK(now_ms() - started >= 400);
    pthread_join(thread, NULL);
    CHECK(s.rc == PSR_RESULT_OK);
    CHECK(!s.on_main_thread);
    CHECK(col.outputs == 1 && col.calls_off_thread == 0);
    /* stopping a finished pipeline is harmless */
    CHECK(psr_pipeline_stop(pl, NULL) == PSR_RESULT_OK);
    psr_pipeline_free(pl);
    collector_clear(&col);
    CHECK(wait_state("pipelines_running", 0, 10000) == 0);
}

static void test_wait_timeout(psr_pool *pool) {
    psr_error *err = NULL;
    psr_pipeline *pl = NULL;
    psr_invocation *inv = (psr_invocation *)SENTINEL;
    uint64_t started, elapsed;
    begin("wait_timeout");
    if (!CHECK(pool != NULL)) {
        return;
    }
    if (!EXPECT_OK(psr_pool_start_script(pool, "Invoke-Stall", false, &pl, &err))) {
        return;
    }
    started = now_ms();
    EXPECT_FAIL(psr_pipeline_wait(pl, NULL, 300, &inv, &err), PSR_RESULT_TIMEOUT);
    elapsed = now_ms() - started;
    CHECK(elapsed >= 250 && elapsed < 15000);
    CHECK_UNTOUCHED(inv, psr_invocation, psr_invocation_free);
    /* still running: wait again, time out again */
    EXPECT_FAIL(psr_pipeline_wait(pl, NULL, 100, &inv, &err), PSR_RESULT_TIMEOUT);
    CHECK(wait_state("pipelines_running", 1, 2000) == 1);
    EXPECT_OK(psr_pipeline_stop(pl, &err));
    inv = NULL;
    if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 0, &inv, &err))) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_STOPPED);
        psr_invocation_free(inv);
    }
    psr_pipeline_free(pl);

    /* a pipeline that ends within its timeout */
    pl = NULL;
    inv = NULL;
    if (EXPECT_OK(psr_pool_start_script(pool, "Start-Sleep -Milliseconds 100; 'done'", false, &pl, &err))) {
        if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 60000, &inv, &err))) {
            CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
            CHECK(json_equals(psr_invocation_output_json(inv, 0), "\"done\""));
            psr_invocation_free(inv);
        }
        psr_pipeline_free(pl);
    }

    /* freeing a running pipeline stops it */
    pl = NULL;
    if (EXPECT_OK(psr_pool_start_script(pool, "Invoke-Stall", false, &pl, &err))) {
        CHECK(wait_state("pipelines_running", 1, 5000) == 1);
        psr_pipeline_free(pl);
        CHECK(wait_state("pipelines_running", 0, 10000) == 0);
    }
}

static void test_host(psr_client *client) {
    host_state hs;
    psr_host host;
    psr_pool *pool;
    psr_invocation *inv;
    const char *json;
    begin("host");
    if (!CHECK(client != NULL)) {
        return;
    }
    memset(&hs, 0, sizeof hs);
    pthread_mutex_init(&hs.lock, NULL);
    memset(&host, 0, sizeof host);
    host.userdata = &hs;
    host.read_line = host_read_line;
    host.prompt_for_credential = host_credential;
    pool = open_pool(client, &host);
    memset(&host, 0, sizeof host); /* psr_pool_open copied it */
    if (pool == NULL) {
        pthread_mutex_destroy(&hs.lock);
        return;
    }

    /* Read-Host */
    inv = run_script(pool, "Read-Host 'Your name'", NULL);
    if (CHECK(inv != NULL)) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED && !psr_invocation_had_errors(inv));
        CHECK(json_equals(psr_invocation_output_json(inv, 0), "\"Alice from C\""));
        psr_invocation_free(inv);
    }
    CHECK(hs.read_line_calls == 1);
    CHECK(hs.read_buf_len > 0);
    CHECK(hs.on_main_thread == 0);

    /* Get-Credential */
    inv = run_script(pool, "Get-Credential", NULL);
    if (CHECK(inv != NULL)) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED && !psr_invocation_had_errors(inv));
        CHECK(psr_invocation_output_count(inv) == 1);
        json = psr_invocation_output_json(inv, 0);
        if (g_verbose) {
            printf("    credential json: %s\n", json != NULL ? json : "(null)");
        }
        CHECK(json_valid(json));
        CHECK(json_contains(json, "\"UserName\":\"CORP\\\\bob\""));
        CHECK(json_contains(json, "{\"$secure\":true}"));
        CHECK(!contains(json, "Sup3r-secret"));
        CHECK(!contains(psr_invocation_json(inv), "Sup3r-secret"));
        psr_invocation_free(inv);
    }
    CHECK(hs.credential_calls == 1);
    CHECK(strcmp(hs.caption, "Windows PowerShell credential request") == 0);
    CHECK(strcmp(hs.message, "Enter your credentials.") == 0);
    CHECK(hs.user_len > 0 && hs.password_len > 0);
    CHECK(hs.on_main_thread == 0);

    /* host callbacks that fail: an error record, no output */
    hs.fail = 1;
    inv = run_script(pool, "Read-Host 'again'; Get-Credential; 'end'", NULL);
    if (CHECK(inv != NULL)) {
        CHECK(psr_invocation_had_errors(inv));
        CHECK(psr_invocation_error_count(inv) == 2);
        CHECK(psr_invocation_output_count(inv) == 1 && json_equals(psr_invocation_output_json(inv, 0), "\"end\""));
        psr_invocation_free(inv);
    }
    CHECK(hs.read_line_calls == 2 && hs.credential_calls == 2);
    CHECK(hs.on_main_thread == 0);
    psr_pool_free(pool);
    pthread_mutex_destroy(&hs.lock);

    /* a pool without a host: Read-Host fails with HostFunctionNotImplemented */
    pool = open_pool(client, NULL);
    inv = run_script(pool, "Read-Host 'nobody'", NULL);
    if (CHECK(inv != NULL)) {
        CHECK(psr_invocation_had_errors(inv) && psr_invocation_output_count(inv) == 0);
        CHECK(json_contains(psr_invocation_json(inv), "HostFunctionNotImplemented"));
        psr_invocation_free(inv);
    }
    psr_pool_free(pool);

    /* a host with NULL members behaves like no host for those calls */
    {
        psr_host partial;
        memset(&partial, 0, sizeof partial);
        pool = open_pool(client, &partial);
        inv = run_script(pool, "Read-Host 'partial'; 'after'", NULL);
        if (CHECK(inv != NULL)) {
            CHECK(psr_invocation_had_errors(inv));
            CHECK(json_equals(psr_invocation_output_json(inv, psr_invocation_output_count(inv) - 1), "\"after\""));
            psr_invocation_free(inv);
        }
        psr_pool_free(pool);
    }
}

static void test_pool_fault(psr_client *client) {
    psr_error *err = NULL;
    psr_pool *pool = (psr_pool *)SENTINEL;
    psr_result rc;
    begin("pool_fault");
    if (!CHECK(client != NULL)) {
        return;
    }
    rc = psr_pool_open(client, "No.Such.Configuration", NULL, &pool, &err);
    CHECK(rc == PSR_RESULT_FAULT);
    CHECK_UNTOUCHED(pool, psr_pool, psr_pool_free);
    CHECK(err != NULL && psr_error_code(err) == PSR_RESULT_FAULT);
    CHECK(psr_error_fault_code(err) == 2150858752u);
    note_error(g_verbose ? "pool fault (expected)" : "", g_verbose ? err : NULL);
    psr_error_free(err);
}

static void test_use_after_close(psr_client *client) {
    psr_error *err = NULL;
    psr_pool *pool;
    psr_pipeline *done = NULL;
    psr_pipeline *running = NULL;
    psr_pipeline *pl = (psr_pipeline *)SENTINEL;
    psr_invocation *inv = (psr_invocation *)SENTINEL;
    psr_invocation *first = NULL;
    long pools_before;
    begin("use_after_close");
    /* main's pool stays open; pools freed by earlier tests may still be going away */
    pools_before = wait_state("pools", 1, 10000);
    pool = open_pool(client, NULL);
    if (pool == NULL) {
        return;
    }
    if (EXPECT_OK(psr_pool_start_script(pool, "'one'", false, &done, &err))) {
        EXPECT_OK(psr_pipeline_wait(done, NULL, 0, &first, &err));
    }
    EXPECT_OK(psr_pool_start_script(pool, "Invoke-Stall", true, &running, &err));
    CHECK(wait_state("pools", pools_before + 1, 2000) == pools_before + 1);
    CHECK(wait_state("pipelines_running", 1, 2000) == 1);

    EXPECT_OK(psr_pool_close(pool, &err));
    /* the pool's resources are gone on the server */
    CHECK(wait_state("pools", pools_before, 10000) == pools_before);
    CHECK(wait_state("pipelines_running", 0, 10000) == 0);

    EXPECT_FAIL(psr_pool_start_script(pool, "'two'", false, &pl, &err), PSR_RESULT_CLOSED);
    CHECK_UNTOUCHED(pl, psr_pipeline, psr_pipeline_free);
    EXPECT_FAIL(psr_pool_start_command(pool, "Get-Date", NULL, false, &pl, &err), PSR_RESULT_CLOSED);
    CHECK_UNTOUCHED(pl, psr_pipeline, psr_pipeline_free);
    EXPECT_FAIL(psr_pool_close(pool, &err), PSR_RESULT_CLOSED);
    if (running != NULL) {
        EXPECT_FAIL(psr_pipeline_send_input_json(running, "1", &err), PSR_RESULT_CLOSED);
        EXPECT_FAIL(psr_pipeline_end_input(running, &err), PSR_RESULT_CLOSED);
        EXPECT_FAIL(psr_pipeline_stop(running, &err), PSR_RESULT_CLOSED);
        EXPECT_FAIL(psr_pipeline_wait(running, NULL, 0, &inv, &err), PSR_RESULT_CLOSED);
        CHECK_UNTOUCHED(inv, psr_invocation, psr_invocation_free);
    }
    if (done != NULL) {
        EXPECT_FAIL(psr_pipeline_wait(done, NULL, 0, &inv, &err), PSR_RESULT_CLOSED);
        EXPECT_FAIL(psr_pipeline_stop(done, &err), PSR_RESULT_CLOSED);
        CHECK_UNTOUCHED(inv, psr_invocation, psr_invocation_free);
    }
    /* the invocation outlives its pool */
    if (CHECK(first != NULL)) {
        CHECK(json_equals(psr_invocation_output_json(first, 0), "\"one\""));
    }
    /* free in the "wrong" order: the pool before its pipelines */
    psr_pool_free(pool);
    psr_pipeline_free(running);
    psr_pipeline_free(done);
    psr_invocation_free(first);

    /* a pool freed without close: the server's pool goes away too */
    pool = open_pool(client, NULL);
    if (pool != NULL) {
        CHECK(wait_state("pools", pools_before + 1, 2000) == pools_before + 1);
        psr_pool_free(pool);
        CHECK(wait_state("pools", pools_before, 10000) == pools_before);
    }
}

static void test_two_pools_one_client(psr_client *client) {
    psr_pool *a = open_pool(client, NULL);
    psr_pool *b = open_pool(client, NULL);
    psr_invocation *ia, *ib;
    begin("two_pools_one_client");
    ia = run_script(a, "'from a'", NULL);
    ib = run_script(b, "'from b'", NULL);
    CHECK(ia != NULL && json_equals(psr_invocation_output_json(ia, 0), "\"from a\""));
    CHECK(ib != NULL && json_equals(psr_invocation_output_json(ib, 0), "\"from b\""));
    psr_invocation_free(ia);
    psr_invocation_free(ib);
    psr_pool_free(a);
    psr_pool_free(b);
}

/* Sessions that outlive the client: a pool disconnected with a pipeline running, reconnected by
 * the same client or connected by another, the pipeline's output written meanwhile received;
 * pool options; is_alive; a pool or pipeline the server does not have; nothing left behind. */
#define LATE_SCRIPT "Start-Sleep -Seconds 2; Write-Output late1; Write-Output late2"

static char *upper_copy(const char *s) {
    char *u = dup_str(s != NULL ? s : "");
    char *p;
    for (p = u; p != NULL && *p != '\0'; p++) {
        if (*p >= 'a' && *p <= 'z') {
            *p = (char)(*p - 'a' + 'A');
        }
    }
    return u;
}

/* Whether the pool list names `pool_id` in `state` with `pipeline_id` among its pipelines
 * (ids compared without regard to case: the server writes its own spelling). */
static int listed_with(psr_client *client, const char *pool_id, const char *state, const char *pipeline_id) {
    psr_error *err = NULL;
    char *json = NULL;
    char *upper_json, *upper_pool, *upper_pipeline, *upper_state, *at;
    int found = 0;
    if (!EXPECT_OK(psr_client_list_pools_json(client, &json, &err))) {
        return 0;
    }
    CHECK(json_valid(json));
    upper_json = upper_copy(json);
    upper_pool = upper_copy(pool_id);
    upper_pipeline = upper_copy(pipeline_id);
    upper_state = upper_copy(state);
    at = strstr(upper_json, upper_pool);
    if (at != NULL) {
        /* The pool's own object (flat: its one array holds strings), from its '{' to its '}'. */
        char *start = at, *end = strchr(at, '}');
        while (start > upper_json && *start != '{') {
            start--;
        }
        if (end != NULL) {
            *end = '\0';
        }
        found = strstr(start, upper_state) != NULL && (pipeline_id == NULL || strstr(start, upper_pipeline) != NULL);
    }
    if (g_verbose || !found) {
        printf("    pools: %s\n", json);
    }
    free(upper_json);
    free(upper_pool);
    free(upper_pipeline);
    free(upper_state);
    psr_string_free(json);
    return found;
}

static void wait_outputs(psr_pipeline *pl, const char *first, const char *second) {
    psr_error *err = NULL;
    psr_invocation *inv = NULL;
    if (EXPECT_OK(psr_pipeline_wait(pl, NULL, 60000, &inv, &err))) {
        CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
        CHECK(psr_invocation_output_count(inv) == 2);
        CHECK(json_equals(psr_invocation_output_json(inv, 0), first));
        CHECK(json_equals(psr_invocation_output_json(inv, 1), second));
        psr_invocation_free(inv);
    }
}

static void test_sessions(psr_client *client) {
    psr_error *err = NULL;
    psr_pool_options *options = psr_pool_options_new();
    psr_pool *pool = NULL, *other = (psr_pool *)SENTINEL;
    psr_pipeline *pl = NULL, *attached = (psr_pipeline *)SENTINEL;
    psr_client *second;
    char *pool_id = NULL, *pipeline_id = NULL;
    bool alive = false;
    long shells_before;
    begin("sessions");
    if (!CHECK(client != NULL && options != NULL)) {
        psr_pool_options_free(options);
        return;
    }
    shells_before = settled_state("shells");

    /* Options and their misuse. */
    EXPECT_OK(psr_pool_options_set_idle_timeout_ms(options, 600000, &err));
    EXPECT_OK(psr_pool_options_set_buffer_mode(options, PSR_BUFFER_MODE_BLOCK, &err));
    EXPECT_FAIL(psr_pool_options_set_buffer_mode(options, 7, &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_pool_options_set_buffer_mode(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_options_set_idle_timeout_ms(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_disconnect(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_reconnect(NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_is_alive(NULL, &alive, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_list_pools_json(NULL, &pool_id, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_pool_connect(client, NULL, NULL, NULL, NULL, &other, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_pool_attach_pipeline(NULL, "x", &attached, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_pool_id(NULL) == NULL && psr_pipeline_id(NULL) == NULL);

    /* The same client: disconnect with a pipeline running, reconnect, receive what it wrote. */
    if (!EXPECT_OK(psr_pool_open_with_options(client, NULL, NULL, options, &pool, &err))) {
        psr_pool_options_free(options);
        return;
    }
    EXPECT_FAIL(psr_pool_is_alive(pool, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(EXPECT_OK(psr_pool_is_alive(pool, &alive, &err)) && alive);
    if (EXPECT_OK(psr_pool_start_script(pool, LATE_SCRIPT, false, &pl, &err))) {
        CHECK(psr_pipeline_id(pl) != NULL && strlen(psr_pipeline_id(pl)) == 36);
        EXPECT_OK(psr_pool_disconnect(pool, &err));
        CHECK(wait_state("disconnected", 1, 10000) == 1);
        CHECK(listed_with(client, psr_pool_id(pool), "\"DISCONNECTED\"", psr_pipeline_id(pl)));
        CHECK(listed_with(client, psr_pool_id(pool), "\"IDLE_TIMEOUT_MS\":600000", NULL));
        EXPECT_FAIL(psr_pool_disconnect(pool, &err), PSR_RESULT_DISCONNECTED);
        EXPECT_FAIL(psr_pool_start_script(pool, "1", false, &attached, &err), PSR_RESULT_DISCONNECTED);
        CHECK_UNTOUCHED(attached, psr_pipeline, psr_pipeline_free);
        CHECK(EXPECT_OK(psr_pool_is_alive(pool, &alive, &err)) && alive);
        /* The pipeline finishes on the server while nobody receives. */
        CHECK(wait_state("pipelines_running", 0, 30000) == 0);
        EXPECT_OK(psr_pool_reconnect(pool, &err));
        CHECK(wait_state("disconnected", 0, 10000) == 0);
        wait_outputs(pl, "\"late1\"", "\"late2\"");
        psr_pipeline_free(pl);
    }
    EXPECT_FAIL(psr_pool_reconnect(pool, &err), PSR_RESULT_PROTOCOL); /* not disconnected */

    /* Another client: the first one ends (freeing a disconnected pool leaves it on the server),
     * the second connects by the pool's id and attaches by the pipeline's. */
    pl = NULL;
    if (EXPECT_OK(psr_pool_start_script(pool, LATE_SCRIPT, false, &pl, &err))) {
        pool_id = dup_str(psr_pool_id(pool));
        pipeline_id = dup_str(psr_pipeline_id(pl));
        EXPECT_OK(psr_pool_disconnect(pool, &err));
        psr_pipeline_free(pl);
        psr_pool_free(pool);
        pool = NULL;
        CHECK(wait_state("disconnected", 1, 5000) == 1);
        second = connect_client();
        if (second != NULL) {
            other = NULL;
            if (EXPECT_OK(psr_client_pool_connect(second, pool_id, NULL, NULL, options, &other, &err))) {
                CHECK(strcmp(psr_pool_id(other), pool_id) == 0);
                CHECK(wait_state("disconnected", 0, 10000) == 0);
                attached = NULL;
                if (EXPECT_OK(psr_pool_attach_pipeline(other, pipeline_id, &attached, &err))) {
                    wait_outputs(attached, "\"late1\"", "\"late2\"");
                    psr_pipeline_free(attached);
                }
                attached = (psr_pipeline *)SENTINEL;
                EXPECT_FAIL(psr_pool_attach_pipeline(other, "not-a-pipeline", &attached, &err),
                            PSR_RESULT_INVALID_CONFIG);
                EXPECT_FAIL(psr_pool_attach_pipeline(other, "8a5d0c2e-0000-4000-8000-000000000001", &attached, &err),
                            PSR_RESULT_NOT_FOUND);
                CHECK_UNTOUCHED(attached, psr_pipeline, psr_pipeline_free);
                /* The connected pool runs new pipelines too. */
                {
                    psr_invocation *inv = run_script(other, "'after connect'", NULL);
                    CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), "\"after connect\""));
                    psr_invocation_free(inv);
                }
                EXPECT_OK(psr_pool_close(other, &err));
                psr_pool_free(other);
            }
            /* A pool the server does not have: NOT_FOUND with its InvalidSelectors fault. */
            other = (psr_pool *)SENTINEL;
            CHECK(psr_client_pool_connect(second, pool_id, NULL, NULL, NULL, &other, &err) == PSR_RESULT_NOT_FOUND);
            CHECK(err != NULL && psr_error_fault_code(err) == 2150858843u);
            psr_error_free(err);
            err = NULL;
            EXPECT_FAIL(psr_client_pool_connect(second, "not a pool", NULL, NULL, NULL, &other, &err),
                        PSR_RESULT_INVALID_CONFIG);
            CHECK_UNTOUCHED(other, psr_pool, psr_pool_free);
            psr_client_free(second);
        }
    }
    free(pool_id);
    free(pipeline_id);

    /* The idle timeout: a disconnected pool nobody comes back to is deleted by the server;
     * reconnecting then is NOT_FOUND (and closes the handle), is_alive false. */
    EXPECT_OK(psr_pool_options_set_idle_timeout_ms(options, 1000, &err));
    EXPECT_OK(psr_pool_options_set_buffer_mode(options, PSR_BUFFER_MODE_DROP, &err));
    pool = NULL;
    if (EXPECT_OK(psr_pool_open_with_options(client, NULL, NULL, options, &pool, &err))) {
        CHECK(listed_with(client, psr_pool_id(pool), "\"BUFFER_MODE\":\"DROP\"", NULL));
        EXPECT_OK(psr_pool_disconnect(pool, &err));
        CHECK(wait_state("shells", shells_before, 30000) == shells_before);
        EXPECT_FAIL(psr_pool_reconnect(pool, &err), PSR_RESULT_NOT_FOUND);
        CHECK(EXPECT_OK(psr_pool_is_alive(pool, &alive, &err)) && !alive);
        EXPECT_FAIL(psr_pool_disconnect(pool, &err), PSR_RESULT_CLOSED);
        psr_pool_free(pool);
    }

    /* is_alive of a pool this client closed: false without asking. */
    pool = open_pool(client, NULL);
    if (pool != NULL) {
        EXPECT_OK(psr_pool_close(pool, &err));
        alive = true;
        CHECK(EXPECT_OK(psr_pool_is_alive(pool, &alive, &err)) && !alive);
        EXPECT_FAIL(psr_pool_disconnect(pool, &err), PSR_RESULT_CLOSED);
        psr_pool_free(pool);
    }
    psr_pool_options_free(options);
    CHECK(wait_state("disconnected", 0, 10000) == 0);
    CHECK(wait_state("shells", shells_before, 10000) == shells_before);
}

/* NTLM proves the user but not the server: towards a host nothing vouches for it is refused
 * before any request, with a message that names the ways out; Basic over http likewise. */
static void test_security_policy(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = (psr_client *)SENTINEL;
    char *json = NULL;
    const char *msg;
    const char *const mechanisms[2] = {"negotiate", "ntlm"};
    long requests_before;
    int i;
    begin("security_policy");
    requests_before = settled_state("requests");
    cfg = psr_config_new(g_url, USERNAME, PASSWORD);
    if (!CHECK(cfg != NULL)) {
        return;
    }
    for (i = 0; i < 2; i++) {
        EXPECT_OK(psr_config_set_auth(cfg, mechanisms[i], &err));
        CHECK(psr_client_connect(cfg, &client, &err) == PSR_RESULT_POLICY);
        CHECK(psr_error_code(err) == PSR_RESULT_POLICY);
        msg = psr_error_message(err);
        CHECK(contains(msg, "Kerberos") && contains(msg, "HTTPS") && contains(msg, "trusted_hosts"));
        CHECK(contains(msg, "127.0.0.1") && contains(msg, mechanisms[i]));
        CHECK(!contains(msg, PASSWORD));
        if (g_verbose) {
            printf("    %s: %s\n", mechanisms[i], msg != NULL ? msg : "(null)");
        }
        psr_error_free(err);
        err = NULL;
        CHECK_UNTOUCHED(client, psr_client, psr_client_free);
    }
    /* a list that does not name the host */
    EXPECT_OK(psr_config_set_trusted_hosts(cfg, "localhost, 10.0.0.*, <local>", &err));
    EXPECT_FAIL(psr_client_connect(cfg, &client, &err), PSR_RESULT_POLICY);
    CHECK_UNTOUCHED(client, psr_client, psr_client_free);
    /* Basic over http, even towards a trusted host */
    EXPECT_OK(psr_config_set_auth(cfg, "basic", &err));
    EXPECT_OK(psr_config_set_trusted_hosts(cfg, "127.0.0.1", &err));
    CHECK(psr_client_connect(cfg, &client, &err) == PSR_RESULT_POLICY);
    CHECK(contains(psr_error_message(err), "https") && contains(psr_error_message(err), "allow_unencrypted"));
    psr_error_free(err);
    err = NULL;
    CHECK_UNTOUCHED(client, psr_client, psr_client_free);
    /* none of that reached the endpoint */
    CHECK(requests_before >= 0 && settled_state("requests") == requests_before);

    /* a wildcard entry that names it */
    EXPECT_OK(psr_config_set_auth(cfg, "ntlm", &err));
    EXPECT_OK(psr_config_set_trusted_hosts(cfg, "srv1, 127.0.0.*", &err));
    client = NULL;
    if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        if (EXPECT_OK(psr_client_connection_info_json(client, &json, &err))) {
            CHECK(json_valid(json));
            CHECK(contains(json, g_url));
            CHECK(json_contains(json, "\"mechanism\": \"ntlm\""));
            CHECK(json_contains(json, "\"negotiated\": \"ntlm\""));
            CHECK(json_contains(json, "\"encryption\": \"message-encryption\""));
            CHECK(json_contains(json, "\"channel_binding\": false"));
            CHECK(json_contains(json, "\"tls_version\": null"));
            CHECK(json_contains(json, "\"cipher_suite\": null"));
            CHECK(json_contains(json, "\"certificate_sha256\": null"));
            if (g_verbose) {
                printf("    connection info: %s\n", json);
            }
            psr_string_free(json);
        }
        psr_client_free(client);
    }
    psr_config_free(cfg);
}

/* The path of a test certificate file (in `buf`). */
static const char *cert_path(char *buf, size_t n, const char *file) {
    snprintf(buf, n, "%s/%s", g_certs, file);
    return buf;
}

/* Settings for the HTTPS endpoint: NTLM, no trusted hosts, `ca` (a file of the test
 * certificates, or NULL for the system's trust store). */
static psr_config *https_config(const char *ca) {
    psr_config *cfg = psr_config_new(g_https_url, USERNAME, PASSWORD);
    psr_error *err = NULL;
    char path[1024];
    if (!CHECK(cfg != NULL)) {
        return NULL;
    }
    EXPECT_OK(psr_config_set_operation_timeout_ms(cfg, 20000, &err));
    EXPECT_OK(psr_config_set_auth(cfg, "ntlm", &err));
    if (ca != NULL) {
        EXPECT_OK(psr_config_set_ca_file(cfg, cert_path(path, sizeof path, ca), &err));
    }
    return cfg;
}

/* Connects with `cfg` (then frees it), runs `echo tls` in a cmd shell and returns the
 * connection info JSON (free with psr_string_free), or NULL after a failed check. Used for the
 * Kerberos and CredSSP endpoints too. */
static char *https_connect(psr_config *cfg, int line) {
    psr_error *err = NULL;
    psr_client *client = NULL;
    psr_cmd_result *res = NULL;
    char *json = NULL;
    const char *const args[1] = {"tls"};
    psr_result rc;
    if (cfg == NULL) {
        return NULL;
    }
    rc = psr_client_connect(cfg, &client, &err);
    psr_config_free(cfg);
    if (!expect_ok_at(rc, &err, "psr_client_connect over https", __FILE__, line)) {
        return NULL;
    }
    if (expect_ok_at(psr_client_run_cmd(client, "echo", args, 1, NULL, 0, &res, &err), &err, "run_cmd over https",
                     __FILE__, line)) {
        size_t len = 0;
        const uint8_t *out = psr_cmd_result_stdout(res, &len);
        check_at(out != NULL && len >= 3 && memcmp(out, "tls", 3) == 0, "echo tls over https", __FILE__, line);
        psr_cmd_result_free(res);
    }
    if (!expect_ok_at(psr_client_connection_info_json(client, &json, &err), &err, "connection info", __FILE__, line)) {
        json = NULL;
    } else if (g_verbose) {
        printf("    connection info: %s\n", json);
    }
    psr_client_free(client);
    return json;
}

/* Connects with `cfg` (then frees it) expecting `expected`; true when the message holds both
 * needles (NULL: not checked) and not the password. */
static int https_message(psr_config *cfg, psr_result expected, const char *needle1, const char *needle2) {
    psr_error *err = NULL;
    psr_client *client = (psr_client *)SENTINEL;
    const char *msg;
    int ok;
    if (cfg == NULL) {
        return 0;
    }
    ok = psr_client_connect(cfg, &client, &err) == expected && psr_error_code(err) == expected;
    psr_config_free(cfg);
    msg = psr_error_message(err);
    if (g_verbose || !ok) {
        printf("    %s: %s\n", psr_result_name(psr_error_code(err)), msg != NULL ? msg : "(no error)");
    }
    ok = ok && (needle1 == NULL || contains(msg, needle1)) && (needle2 == NULL || contains(msg, needle2)) &&
         !contains(msg, PASSWORD);
    psr_error_free(err);
    if (client != (psr_client *)SENTINEL) {
        psr_client_free(client);
        ok = 0;
    }
    return ok;
}

#define HTTPS_CONNECT(cfg) https_connect((cfg), __LINE__)
#define CONNECT_ECHO(cfg) https_connect((cfg), __LINE__)

/* HTTPS: a certificate that verifies proves the server, so NTLM needs no trusted host; failed
 * verification is PSR_RESULT_TLS naming the host and the reason. */
static void test_https(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    char *json;
    char path[1024], path2[1024], expect[256], address[64];
    int unverified_before;
    begin("https");
    if (!CHECK(g_https_url != NULL && g_certs != NULL && g_server_pin != NULL && g_server_sha256 != NULL)) {
        printf("    PSREMOTE_HTTPS_URL, PSREMOTE_CERTS, PSREMOTE_SERVER_PIN and PSREMOTE_SERVER_SHA256 are needed "
               "(bindings-c/tests/run.sh sets them)\n");
        return;
    }
    snprintf(address, sizeof address, "127.0.0.1:%d", url_port(g_https_url));

    /* the test CA: verified, NTLM allowed without trusted hosts, channel bound (the endpoint
     * runs with --cbt strict, so a logon without matching bindings would fail) */
    json = HTTPS_CONNECT(https_config("ca.pem"));
    if (CHECK(json != NULL)) {
        CHECK(json_valid(json));
        CHECK(contains(json, g_https_url));
        CHECK(json_contains(json, "\"mechanism\": \"ntlm\""));
        CHECK(json_contains(json, "\"encryption\": \"tls\""));
        CHECK(json_contains(json, "\"channel_binding\": true"));
        CHECK(json_contains(json, "\"tls_version\": \"TLSv1.3\""));
        CHECK(json_contains(json, "\"cipher_suite\": \"TLS13_"));
        snprintf(expect, sizeof expect, "\"certificate_sha256\": \"%s\"", g_server_sha256);
        CHECK(json_contains(json, expect));
        psr_string_free(json);
    }
    /* PowerShell over TLS too */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        psr_client *client = NULL;
        psr_pool *pool;
        psr_invocation *inv;
        if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
            pool = open_pool(client, NULL);
            inv = run_script(pool, "'over tls'", NULL);
            CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), "\"over tls\""));
            psr_invocation_free(inv);
            if (pool != NULL) {
                EXPECT_OK(psr_pool_close(pool, &err));
            }
            psr_pool_free(pool);
            psr_client_free(client);
        }
        psr_config_free(cfg);
    }

    /* an issuer the client does not trust: the given CA, then the system's */
    CHECK(https_message(https_config("other-ca.pem"), PSR_RESULT_TLS, address, "not issued by a trusted CA"));
    CHECK(https_message(https_config(NULL), PSR_RESULT_TLS, address, "not issued by a trusted CA"));
    /* a name the certificate does not carry */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_server_name(cfg, "elsewhere.test", &err));
        CHECK(https_message(cfg, PSR_RESULT_TLS, "elsewhere.test", "not valid for the name"));
    }
    /* ... and one it does */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_server_name(cfg, "localhost", &err));
        psr_string_free(HTTPS_CONNECT(cfg));
    }

    /* pins: the server's key, then another */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_add_pinned_key(cfg, g_server_pin, &err));
        psr_string_free(HTTPS_CONNECT(cfg));
    }
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_add_pinned_key(cfg, "0000000000000000000000000000000000000000000000000000000000000000", &err));
        CHECK(https_message(cfg, PSR_RESULT_TLS, address, "matches none of the pinned keys"));
    }

    /* skipping verification: nothing proves the server, so NTLM needs a trusted host again, and
     * every connection logs a warning; a matching pin proves it again */
    cfg = https_config(NULL);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_insecure_skip_verify(cfg, true, &err));
        CHECK(https_message(cfg, PSR_RESULT_POLICY, "trusted_hosts", NULL));
    }
    pthread_mutex_lock(&g_log_lock);
    unverified_before = g_log_unverified;
    pthread_mutex_unlock(&g_log_lock);
    cfg = https_config(NULL);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_insecure_skip_verify(cfg, true, &err));
        EXPECT_OK(psr_config_set_trusted_hosts(cfg, "127.0.0.1", &err));
        psr_string_free(HTTPS_CONNECT(cfg));
    }
    pthread_mutex_lock(&g_log_lock);
    CHECK(g_log_unverified > unverified_before);
    pthread_mutex_unlock(&g_log_lock);
    cfg = https_config(NULL);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_insecure_skip_verify(cfg, true, &err));
        EXPECT_OK(psr_config_add_pinned_key(cfg, g_server_pin, &err));
        psr_string_free(HTTPS_CONNECT(cfg));
    }

    /* TLS 1.2 when the client caps it */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_tls_versions(cfg, NULL, "1.2", &err));
        json = HTTPS_CONNECT(cfg);
        CHECK(json_contains(json, "\"tls_version\": \"TLSv1.2\""));
        psr_string_free(json);
    }
    /* message encryption inside TLS */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_message_encryption(cfg, "always", &err));
        json = HTTPS_CONNECT(cfg);
        CHECK(json_contains(json, "\"encryption\": \"tls+message-encryption\""));
        psr_string_free(json);
    }
    /* Basic is fine inside TLS */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_auth(cfg, "basic", &err));
        json = HTTPS_CONNECT(cfg);
        CHECK(json_contains(json, "\"negotiated\": \"basic\"") && json_contains(json, "\"encryption\": \"tls\""));
        psr_string_free(json);
    }

    /* client certificates: an encrypted key with its password; a wrong password is a
     * configuration error that does not repeat it; a certificate that maps to no account */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_auth(cfg, "certificate", &err));
        EXPECT_OK(psr_config_set_client_certificate(cfg, cert_path(path, sizeof path, "client.pem"),
                                                    cert_path(path2, sizeof path2, "client-key-encrypted.pem"),
                                                    "keypass", &err));
        json = HTTPS_CONNECT(cfg);
        CHECK(json_contains(json, "\"mechanism\": \"certificate\""));
        psr_string_free(json);
    }
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_auth(cfg, "certificate", &err));
        EXPECT_OK(psr_config_set_client_certificate(cfg, cert_path(path, sizeof path, "client.pem"),
                                                    cert_path(path2, sizeof path2, "client-key-encrypted.pem"),
                                                    "Wr0ng-keypass-1234", &err));
        CHECK(https_message(cfg, PSR_RESULT_INVALID_CONFIG, "client-key-encrypted.pem", NULL));
    }
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        psr_client *client = NULL;
        psr_cmd_result *res = (psr_cmd_result *)SENTINEL;
        EXPECT_OK(psr_config_set_auth(cfg, "certificate", &err));
        EXPECT_OK(psr_config_set_client_certificate(cfg, cert_path(path, sizeof path, "client-unmapped.pem"),
                                                    cert_path(path2, sizeof path2, "client-unmapped-key.pem"), NULL,
                                                    &err));
        /* certificate authentication has no handshake of its own: the first request is refused */
        if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
            EXPECT_FAIL(psr_client_run_cmd(client, "echo", NULL, 0, NULL, 0, &res, &err), PSR_RESULT_AUTHENTICATION);
            CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);
            psr_client_free(client);
        }
        psr_config_free(cfg);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Kerberos, CredSSP, audit events                                                             */
/* ------------------------------------------------------------------------------------------ */

/* Settings for the Kerberos endpoint: `auth`, REALM\user with `password`, the KDC `kdc` (NULL:
 * PSREMOTE_KDC or krb5.conf), the SPN HTTP/localhost (the URL is 127.0.0.1), delegation as
 * asked. */
static psr_config *krb_config(const char *auth, const char *password, const char *kdc, bool delegate) {
    char user[128];
    psr_config *cfg;
    psr_error *err = NULL;
    snprintf(user, sizeof user, "%s\\user", g_krb_realm);
    cfg = psr_config_new(g_krb_url, user, password);
    if (!CHECK(cfg != NULL)) {
        return NULL;
    }
    EXPECT_OK(psr_config_set_operation_timeout_ms(cfg, 20000, &err));
    EXPECT_OK(psr_config_set_auth(cfg, auth, &err));
    EXPECT_OK(psr_config_set_kerberos(cfg, kdc, NULL, "localhost", delegate, &err));
    return cfg;
}

/* Connects with `cfg` (then frees it) expecting `expected`; true when the message holds
 * `needle` (NULL: not checked) and none of the passwords. */
static int refused_with(psr_config *cfg, psr_result expected, const char *needle) {
    psr_error *err = NULL;
    psr_client *client = (psr_client *)SENTINEL;
    const char *msg;
    size_t i;
    int ok;
    if (cfg == NULL) {
        return 0;
    }
    ok = psr_client_connect(cfg, &client, &err) == expected && psr_error_code(err) == expected;
    psr_config_free(cfg);
    msg = psr_error_message(err);
    if (g_verbose || !ok) {
        printf("    %s: %s\n", psr_result_name(psr_error_code(err)), msg != NULL ? msg : "(no error)");
    }
    ok = ok && msg != NULL && (needle == NULL || contains(msg, needle));
    for (i = 0; ok && i < sizeof SECRETS / sizeof SECRETS[0]; i++) {
        ok = !contains(msg, SECRETS[i]);
    }
    psr_error_free(err);
    if (client != (psr_client *)SENTINEL) {
        psr_client_free(client);
        ok = 0;
    }
    return ok;
}

/* Kerberos against a real MIT KDC: the Kerberos scheme with message encryption and a runspace
 * pool, Negotiate choosing Kerberos without trusted hosts, the KDC over UDP, delegation seen at
 * the server, other SPN service classes, and refusals. Logged at trace level throughout. */
static void test_kerberos(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = NULL;
    psr_pool *pool;
    psr_invocation *inv;
    char *json, *logon;
    char kdc[160], expect[160];
    int kerberos_before, delegations_before;
    begin("kerberos");
    if (!CHECK(g_krb_url != NULL && g_krb_kdc != NULL && g_krb_realm != NULL)) {
        printf("    PSREMOTE_KRB_URL, PSREMOTE_KRB_KDC and PSREMOTE_KRB_REALM are needed "
               "(bindings-c/tests/run.sh sets them)\n");
        return;
    }
    /* every record, trace level included, goes through the secrets check of the log callback */
    psr_set_log_callback(log_callback, &g_log_userdata_token, 5);
    kerberos_before = log_counter(&g_log_audit_kerberos);

    /* the Kerberos scheme: sealed with the ticket's session key; PowerShell */
    cfg = krb_config("kerberos", PASSWORD, g_krb_kdc, false);
    if (cfg != NULL && EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        pool = open_pool(client, NULL);
        inv = run_script(pool, "'kerberos ok'", NULL);
        CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), "\"kerberos ok\""));
        psr_invocation_free(inv);
        if (pool != NULL) {
            EXPECT_OK(psr_pool_close(pool, &err));
        }
        psr_pool_free(pool);
        if (EXPECT_OK(psr_client_connection_info_json(client, &json, &err))) {
            CHECK(json_valid(json));
            CHECK(contains(json, g_krb_url));
            CHECK(json_contains(json, "\"mechanism\": \"kerberos\""));
            CHECK(json_contains(json, "\"negotiated\": \"kerberos\""));
            CHECK(json_contains(json, "\"encryption\": \"message-encryption\""));
            CHECK(json_contains(json, "\"tls_version\": null"));
            if (g_verbose) {
                printf("    connection info: %s\n", json);
            }
            psr_string_free(json);
        }
        psr_client_free(client);
    }
    psr_config_free(cfg);
    logon = last_logon_at(g_krb_url);
    if (g_verbose) {
        printf("    logon: %s\n", logon != NULL ? logon : "(none)");
    }
    snprintf(expect, sizeof expect, "\"principal\":\"user@%s\"", g_krb_realm);
    CHECK(contains(logon, "{\"scheme\":\"kerberos\",\"mechanism\":\"kerberos\","));
    CHECK(contains(logon, expect));
    CHECK(contains(logon, "\"delegated\":false"));
    free(logon);
    /* the audit trail names the mechanism negotiated */
    CHECK(log_counter(&g_log_audit_kerberos) > kerberos_before);

    /* Negotiate picks Kerberos (no trusted hosts: NTLM would be refused), the KDC over UDP, and
     * the TGT delegated: the server holds it, and the audit trail warns */
    delegations_before = log_counter(&g_log_audit_krb_delegation);
    snprintf(kdc, sizeof kdc, "udp://%s", g_krb_kdc);
    json = CONNECT_ECHO(krb_config("negotiate", PASSWORD, kdc, true));
    CHECK(json_contains(json, "\"mechanism\": \"negotiate\""));
    CHECK(json_contains(json, "\"negotiated\": \"kerberos\""));
    psr_string_free(json);
    logon = last_logon_at(g_krb_url);
    if (g_verbose) {
        printf("    logon: %s\n", logon != NULL ? logon : "(none)");
    }
    CHECK(contains(logon, "{\"scheme\":\"negotiate\",\"mechanism\":\"kerberos\","));
    snprintf(expect, sizeof expect, "\"delegated\":true,\"delegated_principal\":\"user@%s\"", g_krb_realm);
    CHECK(contains(logon, expect));
    free(logon);
    CHECK(log_counter(&g_log_audit_krb_delegation) > delegations_before);

    /* another service class the keytab holds */
    cfg = krb_config("kerberos", PASSWORD, g_krb_kdc, false);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_kerberos(cfg, g_krb_kdc, "WSMAN", "localhost", false, &err));
        psr_string_free(CONNECT_ECHO(cfg));
    }

    /* refusals: a wrong password; Negotiate with no KDC answering and nothing that allows NTLM */
    CHECK(refused_with(krb_config("kerberos", "Wr0ng-krb-Passw0rd", g_krb_kdc, false), PSR_RESULT_AUTHENTICATION,
                       NULL));
    CHECK(refused_with(krb_config("negotiate", PASSWORD, "tcp://127.0.0.1:1", false), PSR_RESULT_AUTHENTICATION,
                       "NTLM may not stand in"));
    psr_set_log_callback(log_callback, &g_log_userdata_token, 3);
}

/* CredSSP: over https with the CA file (TLS carries the bodies), over http sealed towards a
 * trusted host with the delegated password checked by the server, the audit warning on every
 * delegation, and a wrong password. Logged at trace level throughout. */
static void test_credssp(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = NULL;
    psr_pool *pool;
    psr_invocation *inv;
    char *json, *logon;
    char path[1024];
    int warnings_before, connects_before;
    begin("credssp");
    if (!CHECK(g_https_url != NULL && g_certs != NULL)) {
        printf("    PSREMOTE_HTTPS_URL and PSREMOTE_CERTS are needed (bindings-c/tests/run.sh sets them)\n");
        return;
    }
    psr_set_log_callback(log_callback, &g_log_userdata_token, 5);
    warnings_before = log_counter(&g_log_audit_credssp_warning);
    connects_before = log_counter(&g_log_audit_credssp);

    /* https: the verified certificate proves the server, no trusted hosts */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_auth(cfg, "credssp", &err));
        json = HTTPS_CONNECT(cfg);
        CHECK(json_contains(json, "\"mechanism\": \"credssp\""));
        CHECK(json_contains(json, "\"negotiated\": \"credssp\""));
        CHECK(json_contains(json, "\"encryption\": \"tls\""));
        CHECK(json_contains(json, "\"tls_version\": \"TLSv1.3\""));
        psr_string_free(json);
    }
    /* PowerShell over it */
    cfg = https_config("ca.pem");
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_auth(cfg, "credssp", &err));
        if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
            pool = open_pool(client, NULL);
            inv = run_script(pool, "'delegated'", NULL);
            CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), "\"delegated\""));
            psr_invocation_free(inv);
            if (pool != NULL) {
                EXPECT_OK(psr_pool_close(pool, &err));
            }
            psr_pool_free(pool);
            psr_client_free(client);
        }
        psr_config_free(cfg);
    }
    /* a wrong password: the inner logon is refused */
    cfg = psr_config_new(g_https_url, USERNAME, "Wr0ng-credssp-Pa55");
    if (CHECK(cfg != NULL)) {
        EXPECT_OK(psr_config_set_auth(cfg, "credssp", &err));
        EXPECT_OK(psr_config_set_ca_file(cfg, cert_path(path, sizeof path, "ca.pem"), &err));
        CHECK(refused_with(cfg, PSR_RESULT_AUTHENTICATION, "wrong user name or password"));
    }

    /* http: sealed with the CredSSP channel, only towards a trusted host; the server received
     * our account and the right password (it records whether it was, never the password).
     * Under valgrind only the logon: sealed bodies carry records of the CredSSP channel, whose
     * GCM tags Memcheck cannot see as defined (valgrind.supp explains why), and they leave
     * through the writer of every plain-http body, which no suppression should cover. */
    cfg = make_config(PASSWORD);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_auth(cfg, "credssp", &err));
        if (g_valgrind) {
            json = NULL;
            client = NULL;
            if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
                if (!EXPECT_OK(psr_client_connection_info_json(client, &json, &err))) {
                    json = NULL;
                }
                psr_client_free(client);
            }
            psr_config_free(cfg);
        } else {
            json = CONNECT_ECHO(cfg);
        }
        CHECK(json_contains(json, "\"negotiated\": \"credssp\""));
        CHECK(json_contains(json, "\"encryption\": \"message-encryption\""));
        psr_string_free(json);
        logon = last_logon_at(g_url);
        if (g_verbose) {
            printf("    logon: %s\n", logon != NULL ? logon : "(none)");
        }
        CHECK(contains(logon, "{\"scheme\":\"credssp\",\"mechanism\":\"ntlm\","));
        CHECK(contains(logon, "\"credssp_user\":\"DOMAIN\\\\user\",\"credssp_password_ok\":true"));
        free(logon);
    }
    cfg = psr_config_new(g_url, USERNAME, PASSWORD);
    if (CHECK(cfg != NULL)) {
        EXPECT_OK(psr_config_set_auth(cfg, "credssp", &err));
        CHECK(refused_with(cfg, PSR_RESULT_POLICY, "trusted_hosts"));
    }

    /* every delegation was an audit warning, every logon an audit connect event */
    CHECK(log_counter(&g_log_audit_credssp_warning) >= warnings_before + 3);
    CHECK(log_counter(&g_log_audit_credssp) >= connects_before + 3);
    psr_set_log_callback(log_callback, &g_log_userdata_token, 3);
}

/* What the log callback saw over the whole run: audit connect events under their own target,
 * and no password in any record. */
static void test_log_records(void) {
    begin("log_records");
    pthread_mutex_lock(&g_log_lock);
    CHECK(g_log_audit_connect > 0);
    CHECK(g_log_audit_elsewhere == 0);
    CHECK(g_log_secrets == 0);
    if (g_log_secrets != 0) {
        printf("    %d records held a password; the first: %s\n", g_log_secrets, g_log_secret_example);
    }
    pthread_mutex_unlock(&g_log_lock);
}

static void test_log_off(void) {
    int before;
    psr_client *client;
    begin("log_off");
    psr_set_log_callback(log_callback, &g_log_userdata_token, 0); /* max_level 0: off */
    before = log_count();
    client = connect_client();
    psr_client_free(client);
    CHECK(log_count() == before);
    psr_set_log_callback(NULL, &g_log_userdata_token, 5); /* NULL: off */
    client = connect_client();
    psr_client_free(client);
    CHECK(log_count() == before);
}

static void test_final_state(void) {
    char *state;
    begin("final_state");
    CHECK(wait_state("pools", 0, 10000) == 0);
    CHECK(wait_state("pipelines", 0, 10000) == 0);
    CHECK(wait_state("shells", 0, 10000) == 0);
    CHECK(wait_state("commands", 0, 10000) == 0);
    state = control_state();
    if (g_verbose || state == NULL || state_value(state, "shells") != 0) {
        printf("    control state: %s\n", state != NULL ? state : "(unavailable)");
    }
    free(state);
}

static void test_server_and_metadata(psr_client *client, psr_pool *pool) {
    psr_error *err = NULL;
    char *json = (char *)SENTINEL;
    uint32_t size = 0;
    const char *names[] = {"Write-*"};
    begin("server_and_metadata");
    if (!CHECK(client != NULL && pool != NULL)) {
        return;
    }
    /* winrm/config: the endpoint runs with its default limits (500 KB, 60 s) */
    if (EXPECT_OK(psr_client_server_config_json(client, &json, &err))) {
        CHECK(strstr(json, "\"max_envelope_size_kb\":500") != NULL);
        CHECK(strstr(json, "\"max_timeout_ms\":60000") != NULL);
        CHECK(strstr(json, "\"Service/AllowUnencrypted\"") != NULL);
        psr_string_free(json);
    }
    if (EXPECT_OK(psr_client_fit_envelope_to_server(client, &size, &err))) {
        CHECK(size == 500u * 1024u);
    }
    EXPECT_OK(psr_client_fit_envelope_to_server(client, NULL, &err));
    /* command metadata without a pipeline */
    json = (char *)SENTINEL;
    if (EXPECT_OK(psr_pool_command_metadata_json(pool, names, 1, 8, &json, &err))) {
        CHECK(json[0] == '[');
        CHECK(strstr(json, "Write-Output") != NULL);
        CHECK(strstr(json, "Get-Date") == NULL);
        psr_string_free(json);
    }
    json = (char *)SENTINEL;
    EXPECT_FAIL(psr_pool_command_metadata_json(pool, names, 1, 4096, &json, &err), PSR_RESULT_INVALID_ARGUMENT);
    CHECK(json == (char *)SENTINEL);
    EXPECT_FAIL(psr_pool_command_metadata_json(pool, NULL, 0, 0, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_server_config_json(NULL, &json, &err), PSR_RESULT_NULL_ARGUMENT);
    /* the key exchange with a deadline */
    EXPECT_OK(psr_pool_exchange_key(pool, 30000, &err));
    EXPECT_FAIL(psr_pool_exchange_key(NULL, 0, &err), PSR_RESULT_NULL_ARGUMENT);
}

/* ------------------------------------------------------------------------------------------ */
/* Files: psr_client_copy / psr_client_fetch (the endpoint's file system is this host's)       */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    int calls;
    uint64_t last_done;
    int64_t last_total;
    int stop_after; /* 0: never stop */
} transfer_progress;

static int32_t on_transfer_progress(void *userdata, uint64_t done, int64_t total) {
    transfer_progress *p = (transfer_progress *)userdata;
    p->calls++;
    p->last_done = done;
    p->last_total = total;
    return p->stop_after != 0 && p->calls >= p->stop_after ? 1 : 0;
}

static int write_file(const char *path, size_t len) {
    FILE *f = fopen(path, "wb");
    size_t i;
    if (f == NULL) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        fputc((int)((i * 2654435761u) >> 13) & 0xff, f);
    }
    return fclose(f) == 0;
}

/* 1 when both files hold the same bytes. */
static int same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb");
    FILE *fb = fopen(b, "rb");
    int same = fa != NULL && fb != NULL;
    while (same) {
        int ca = fgetc(fa);
        int cb = fgetc(fb);
        if (ca != cb) {
            same = 0;
        } else if (ca == EOF) {
            break;
        }
    }
    if (fa != NULL) {
        fclose(fa);
    }
    if (fb != NULL) {
        fclose(fb);
    }
    return same;
}

/* The number of entries (besides . and ..) in a directory. */
static int count_entries(const char *dir) {
    char cmd[600];
    FILE *p;
    int n = -1;
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    p = popen(cmd, "r");
    if (p != NULL) {
        if (fscanf(p, "%d", &n) != 1) {
            n = -1;
        }
        pclose(p);
    }
    return n;
}

/* A failed transfer: its code, and the file kind and side its error carries. */
static void expect_file_error(psr_result rc, psr_error **err, psr_result code, const char *kind, const char *side,
                              const char *what) {
    CHECK(rc == code);
    CHECK(*err != NULL);
    if (*err != NULL) {
        const char *k = psr_error_file_kind(*err);
        const char *s = psr_error_file_side(*err);
        if (!CHECK(k != NULL && strcmp(k, kind) == 0) || !CHECK(s != NULL && strcmp(s, side) == 0) ||
            !CHECK(psr_error_file_path(*err) != NULL)) {
            printf("  %s: %s (kind %s, side %s)\n", what, psr_error_message(*err), k ? k : "NULL", s ? s : "NULL");
        }
        psr_error_free(*err);
        *err = NULL;
    }
}

/* Deadlines and the output limit (issue 12): a run past its deadline is TIMEOUT, past its output
 * limit OUTPUT_TOO_LARGE, a pool open past its deadline TIMEOUT; a cmd read that times out keeps
 * the command until the process and shell are freed. Every time, what was opened on the server
 * is released: its counts go back to where they were. */
static void test_deadlines(psr_client *client) {
    psr_error *err = NULL;
    psr_cmd_result *res = (psr_cmd_result *)SENTINEL;
    psr_run_cmd_options *o = NULL;
    psr_pool_options *po = NULL;
    psr_pool *pool = (psr_pool *)SENTINEL;
    psr_cmd_shell *shell = NULL;
    psr_cmd_process *process = NULL;
    psr_cmd_chunk *chunk = (psr_cmd_chunk *)SENTINEL;
    const char *const sleep_args[1] = {"60"};
    long shells, pools, commands;
    const uint8_t *data;
    size_t len;
    begin("deadlines");
    if (!CHECK(client != NULL)) {
        return;
    }
    shells = settled_state("shells");
    pools = settled_state("pools");
    commands = settled_state("commands");
    o = psr_run_cmd_options_new();
    if (!CHECK(o != NULL)) {
        return;
    }
    EXPECT_FAIL(psr_run_cmd_options_set_timeout_ms(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_run_cmd_options_set_max_output(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_OK(psr_run_cmd_options_set_shell_options(o, NULL, &err));
    EXPECT_OK(psr_run_cmd_options_set_skip_cmd_shell(o, false, &err));

    /* past the deadline: TIMEOUT, nothing written, the command and its shell released */
    EXPECT_OK(psr_run_cmd_options_set_timeout_ms(o, 2000, &err));
    EXPECT_FAIL(psr_client_run_cmd_with_options(client, "sleep", sleep_args, 1, NULL, 0, o, &res, &err),
                PSR_RESULT_TIMEOUT);
    CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);
    CHECK(wait_state("commands", commands, 30000) == commands);
    CHECK(wait_state("shells", shells, 30000) == shells);
    /* within it: the result */
    res = NULL;
    EXPECT_OK(psr_run_cmd_options_set_timeout_ms(o, 60000, &err));
    if (EXPECT_OK(psr_client_run_cmd_with_options(client, "echo", sleep_args, 1, NULL, 0, o, &res, &err))) {
        data = psr_cmd_result_stdout(res, &len);
        CHECK(data != NULL && len == 3 && memcmp(data, "60\n", 3) == 0);
        psr_cmd_result_free(res);
    }

    /* past the output limit (stdout and stderr together): OUTPUT_TOO_LARGE, command terminated */
    res = (psr_cmd_result *)SENTINEL;
    EXPECT_OK(psr_run_cmd_options_set_max_output(o, 100000, &err));
    EXPECT_FAIL(psr_client_run_cmd_with_options(
                    client, "head -c 60000 /dev/zero; head -c 60000 /dev/zero 1>&2; sleep 60", NULL, 0, NULL, 0, o,
                    &res, &err),
                PSR_RESULT_OUTPUT_TOO_LARGE);
    CHECK_UNTOUCHED(res, psr_cmd_result, psr_cmd_result_free);
    CHECK(strcmp(psr_result_name(PSR_RESULT_OUTPUT_TOO_LARGE), "PSR_RESULT_OUTPUT_TOO_LARGE") == 0);
    CHECK(wait_state("commands", commands, 30000) == commands);
    CHECK(wait_state("shells", shells, 30000) == shells);
    /* up to the limit, and no limit */
    res = NULL;
    if (EXPECT_OK(psr_client_run_cmd_with_options(client, "head -c 100000 /dev/zero", NULL, 0, NULL, 0, o, &res,
                                                  &err))) {
        psr_cmd_result_stdout(res, &len);
        CHECK(len == 100000);
        psr_cmd_result_free(res);
    }
    res = NULL;
    EXPECT_OK(psr_run_cmd_options_set_max_output(o, 0, &err));
    if (EXPECT_OK(psr_client_run_cmd_with_options(client, "head -c 300000 /dev/zero", NULL, 0, NULL, 0, o, &res,
                                                  &err))) {
        psr_cmd_result_stdout(res, &len);
        CHECK(len == 300000);
        psr_cmd_result_free(res);
    }
    psr_run_cmd_options_free(o);
    psr_run_cmd_options_free(NULL);

    /* a cmd read that times out loses nothing and keeps the command; freeing releases it */
    if (EXPECT_OK(psr_client_cmd_shell_open(client, NULL, &shell, &err)) &&
        EXPECT_OK(psr_cmd_shell_start(shell, "sleep", sleep_args, 1, false, &process, &err))) {
        EXPECT_FAIL(psr_cmd_process_read(process, 300, &chunk, &err), PSR_RESULT_TIMEOUT);
        CHECK_UNTOUCHED(chunk, psr_cmd_chunk, psr_cmd_chunk_free);
        CHECK(wait_state("commands", commands + 1, 5000) == commands + 1);
        psr_cmd_process_free(process);
        CHECK(wait_state("commands", commands, 30000) == commands);
    }
    psr_cmd_shell_free(shell);
    CHECK(wait_state("shells", shells, 30000) == shells);

    /* a pool open past its deadline (1 ms: it cannot finish) is TIMEOUT, the pool deleted */
    po = psr_pool_options_new();
    if (CHECK(po != NULL)) {
        EXPECT_FAIL(psr_pool_options_set_open_timeout_ms(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
        EXPECT_OK(psr_pool_options_set_open_timeout_ms(po, 1, &err));
        EXPECT_FAIL(psr_pool_open_with_options(client, NULL, NULL, po, &pool, &err), PSR_RESULT_TIMEOUT);
        CHECK_UNTOUCHED(pool, psr_pool, psr_pool_free);
        CHECK(wait_state("pools", pools, 30000) == pools);
        CHECK(wait_state("shells", shells, 30000) == shells);
        pool = NULL;
        EXPECT_OK(psr_pool_options_set_open_timeout_ms(po, 60000, &err));
        if (EXPECT_OK(psr_pool_open_with_options(client, NULL, NULL, po, &pool, &err))) {
            EXPECT_OK(psr_pool_close(pool, &err));
            psr_pool_free(pool);
        }
        psr_pool_options_free(po);
    }
    CHECK(wait_state("pools", pools, 30000) == pools);
}

static void test_files(psr_client *client) {
    psr_error *err = NULL;
    char dir[] = "/tmp/psr-c-files-XXXXXX";
    char src[300], remote[300], back[300], nope[300], sub[300];
    char *path = (char *)SENTINEL;
    transfer_progress progress;
    psr_transfer_options *options;
    const size_t size = 700000;
    psr_result rc;

    begin("files");
    if (!CHECK(mkdtemp(dir) != NULL)) {
        return;
    }
    snprintf(src, sizeof src, "%s/src.bin", dir);
    snprintf(remote, sizeof remote, "%s/remote.bin", dir);
    snprintf(back, sizeof back, "%s/back.bin", dir);
    snprintf(nope, sizeof nope, "%s/nope.bin", dir);
    snprintf(sub, sizeof sub, "%s/no-folder/x.bin", dir);
    CHECK(write_file(src, size));

    /* a round trip with progress */
    memset(&progress, 0, sizeof progress);
    if (EXPECT_OK(psr_client_copy(client, src, remote, NULL, on_transfer_progress, &progress, &path, &err))) {
        CHECK(strcmp(path, remote) == 0);
        psr_string_free(path);
    }
    CHECK(progress.calls >= 2 && progress.last_done == size && progress.last_total == (int64_t)size);
    memset(&progress, 0, sizeof progress);
    path = (char *)SENTINEL;
    if (EXPECT_OK(psr_client_fetch(client, remote, back, NULL, on_transfer_progress, &progress, &path, &err))) {
        CHECK(strcmp(path, back) == 0);
        psr_string_free(path);
    }
    CHECK(progress.calls >= 2 && progress.last_done == size);
    CHECK(same_file(src, remote) && same_file(src, back));

    /* options: a deadline, the configuration, variables left verbatim */
    options = psr_transfer_options_new();
    CHECK(options != NULL);
    EXPECT_OK(psr_transfer_options_set_timeout_ms(options, 60000, &err));
    EXPECT_OK(psr_transfer_options_set_configuration_name(options, "Microsoft.PowerShell", &err));
    EXPECT_FAIL(psr_transfer_options_set_configuration_name(options, "", &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_OK(psr_transfer_options_set_expand_variables(options, 0, &err));
    path = (char *)SENTINEL;
    rc = psr_client_copy(client, src, "%PSR_C_NO_SUCH_VAR%/x.bin", options, NULL, NULL, &path, &err);
    expect_file_error(rc, &err, PSR_RESULT_FILE, "ParentNotFound", "remote", "verbatim variable");
    CHECK(path == (char *)SENTINEL);
    psr_transfer_options_free(options);
    psr_transfer_options_free(NULL);

    /* a chunk size of the caller's: one progress call per chunk, the last one short */
    options = psr_transfer_options_new();
    CHECK(options != NULL);
    EXPECT_FAIL(psr_transfer_options_set_chunk_size(options, 4194305, &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_transfer_options_set_chunk_size(NULL, 100000, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_OK(psr_transfer_options_set_chunk_size(options, 4194304, &err));
    EXPECT_OK(psr_transfer_options_set_chunk_size(options, 0, &err));
    EXPECT_OK(psr_transfer_options_set_chunk_size(options, 100000, &err));
    memset(&progress, 0, sizeof progress);
    path = (char *)SENTINEL;
    if (EXPECT_OK(psr_client_copy(client, src, remote, options, on_transfer_progress, &progress, &path, &err))) {
        psr_string_free(path);
    }
    CHECK(progress.calls == 7 && progress.last_done == size);
    CHECK(same_file(src, remote));
    path = (char *)SENTINEL;
    psr_transfer_options_free(options);

    /* bad input on either side: typed errors, nothing written */
    rc = psr_client_copy(client, nope, remote, NULL, NULL, NULL, &path, &err);
    expect_file_error(rc, &err, PSR_RESULT_FILE, "NotFound", "local", "copy of a missing file");
    rc = psr_client_fetch(client, nope, back, NULL, NULL, NULL, &path, &err);
    expect_file_error(rc, &err, PSR_RESULT_FILE, "NotFound", "remote", "fetch of a missing file");
    rc = psr_client_copy(client, src, dir, NULL, NULL, NULL, &path, &err);
    expect_file_error(rc, &err, PSR_RESULT_FILE, "IsADirectory", "remote", "copy onto a directory");
    rc = psr_client_fetch(client, remote, sub, NULL, NULL, NULL, &path, &err);
    expect_file_error(rc, &err, PSR_RESULT_FILE, "ParentNotFound", "local", "fetch into a missing folder");
    CHECK(path == (char *)SENTINEL);

    /* a progress callback that stops: CALLBACK, no partial file */
    memset(&progress, 0, sizeof progress);
    progress.stop_after = 1;
    CHECK(remove(back) == 0);
    EXPECT_FAIL(psr_client_fetch(client, remote, back, NULL, on_transfer_progress, &progress, &path, &err),
                PSR_RESULT_CALLBACK);
    CHECK(progress.calls == 1);
    CHECK(count_entries(dir) == 2); /* src.bin and remote.bin */

    /* NULL arguments; a non-file error has no file details */
    rc = psr_client_copy(NULL, src, remote, NULL, NULL, NULL, &path, &err);
    CHECK(rc == PSR_RESULT_NULL_ARGUMENT && err != NULL && psr_error_file_kind(err) == NULL &&
          psr_error_file_side(err) == NULL && psr_error_file_path(err) == NULL);
    psr_error_free(err);
    err = NULL;
    EXPECT_FAIL(psr_client_fetch(client, NULL, back, NULL, NULL, NULL, &path, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_client_fetch(client, remote, back, NULL, NULL, NULL, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_error_file_kind(NULL) == NULL);
    CHECK(path == (char *)SENTINEL);

    /* nothing left on the server: only main's pool */
    CHECK(wait_state("pipelines", 0, 10000) == 0);
    CHECK(wait_state("pools", 1, 10000) == 1);
    remove(src);
    remove(remote);
    CHECK(rmdir(dir) == 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Fleets: one script or command on many hosts                                                */
/* ------------------------------------------------------------------------------------------ */

static const char *g_url2;        /* PSREMOTE_URL2: a second healthy endpoint */
static const char *g_stalled_url; /* PSREMOTE_STALLED_URL: every Receive stalls (--misbehave stalled-receives) */

#define FLEET_MAX 16

/* What a fleet run's callback saw, by host index. */
typedef struct fleet_seen {
    pthread_t caller;
    int calls;
    int off_thread;    /* callbacks on a thread other than the run's caller */
    int bad_args;      /* an index out of range, a NULL host or JSON */
    int stop_at;       /* return nonzero from the n-th callback (1-based); 0 = never */
    int count[FLEET_MAX];
    psr_host_status status[FLEET_MAX];
    psr_result code[FLEET_MAX]; /* the error's code; PSR_RESULT_OK when the host answered */
    char *host[FLEET_MAX];
    char *message[FLEET_MAX];   /* the error's message, or NULL */
    char *json[FLEET_MAX];      /* compacted */
} fleet_seen;

static void fleet_seen_init(fleet_seen *s) {
    memset(s, 0, sizeof *s);
    s->caller = pthread_self();
}

static void fleet_seen_clear(fleet_seen *s) {
    int i;
    for (i = 0; i < FLEET_MAX; i++) {
        free(s->host[i]);
        free(s->message[i]);
        free(s->json[i]);
    }
    fleet_seen_init(s);
}

static int32_t on_fleet_host(void *userdata, size_t index, const char *host, psr_host_status status,
                             const char *result_json, const psr_error *error) {
    fleet_seen *s = (fleet_seen *)userdata;
    s->calls++;
    if (!pthread_equal(pthread_self(), s->caller)) {
        s->off_thread++;
    }
    if (index >= FLEET_MAX || host == NULL || result_json == NULL || !json_valid(result_json)) {
        s->bad_args++;
        return 0;
    }
    s->count[index]++;
    s->status[index] = status;
    s->code[index] = error != NULL ? psr_error_code(error) : PSR_RESULT_OK;
    free(s->host[index]);
    free(s->message[index]);
    free(s->json[index]);
    s->host[index] = dup_str(host);
    s->message[index] = error != NULL ? dup_str(psr_error_message(error)) : NULL;
    s->json[index] = json_compact(result_json);
    return s->stop_at != 0 && s->calls == s->stop_at ? 1 : 0;
}

/* The text of the top-level member `key` of a JSON object (malloc'd), or NULL. Keys are
 * compared as written (no escapes). */
static char *json_member(const char *json, const char *key) {
    const char *p, *name, *name_end, *value;
    size_t n = strlen(key);
    char *copy;
    if (json == NULL || *(p = json_ws(json)) != '{') {
        return NULL;
    }
    p = json_ws(p + 1);
    while (*p == '"') {
        name = p + 1;
        if ((name_end = json_string(p)) == NULL || *(p = json_ws(name_end)) != ':') {
            return NULL;
        }
        value = json_ws(p + 1);
        if ((p = json_value(value, 1)) == NULL) {
            return NULL;
        }
        if ((size_t)(name_end - 1 - name) == n && strncmp(name, key, n) == 0) {
            copy = (char *)malloc((size_t)(p - value) + 1);
            if (copy != NULL) {
                memcpy(copy, value, (size_t)(p - value));
                copy[p - value] = '\0';
            }
            return copy;
        }
        p = json_ws(p);
        if (*p != ',') {
            return NULL;
        }
        p = json_ws(p + 1);
    }
    return NULL;
}

/* The top-level member `key` of `json` equals `expected` (both compacted). */
static int member_is(const char *json, const char *key, const char *expected) {
    char *m = json_member(json, key);
    int same = m != NULL && json_equals(m, expected);
    free(m);
    return same;
}

/* The top-level member `key` of `json` contains `fragment` (both compacted). */
static int member_has(const char *json, const char *key, const char *fragment) {
    char *m = json_member(json, key);
    int found = m != NULL && json_contains(m, fragment);
    free(m);
    return found;
}

/* A URL on 127.0.0.1 where nothing listens: a port that was free a moment ago. */
static int dead_url(char *url, size_t n) {
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok = fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
         getsockname(fd, (struct sockaddr *)&addr, &alen) == 0;
    if (ok) {
        snprintf(url, n, "http://127.0.0.1:%u/wsman", (unsigned)ntohs(addr.sin_port));
    }
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

/* Adds a host reached with `password` at `url`; the config is freed at once (the fleet copies it). */
static void add_host(psr_fleet *fleet, const char *name, const char *url, const char *password) {
    psr_error *err = NULL;
    psr_config *cfg = make_config_at(url, password);
    if (CHECK(cfg != NULL)) {
        EXPECT_OK(psr_config_set_auth(cfg, "ntlm", &err));
        expect_ok_at(psr_fleet_add_host(fleet, name, cfg, &err), &err, name, __FILE__, __LINE__);
    }
    psr_config_free(cfg);
}

/* Nothing left open on the endpoint at `url`. */
static void check_nothing_left(const char *url) {
    static const char *const keys[] = {"pools", "shells", "pipelines", "commands"};
    unsigned limit = g_valgrind ? 60000 : 15000;
    size_t i;
    char what[160];
    for (i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        long left = wait_state_at(url, keys[i], 0, limit);
        snprintf(what, sizeof what, "%s left on %s: %ld", keys[i], url, left);
        check_at(left == 0, what, __FILE__, __LINE__);
    }
}

static void test_fleet_misuse(void) {
    psr_error *err = NULL;
    psr_fleet *fleet = psr_fleet_new();
    psr_fleet_options *o = psr_fleet_options_new();
    psr_config *cfg = make_config(PASSWORD);
    fleet_seen seen;
    const char bad_utf8[] = {'\xff', '\0'};
    begin("fleet_misuse");
    fleet_seen_init(&seen);
    if (!CHECK(fleet != NULL && o != NULL && cfg != NULL)) {
        psr_fleet_free(fleet);
        psr_fleet_options_free(o);
        psr_config_free(cfg);
        return;
    }
    EXPECT_FAIL(psr_fleet_add_host(NULL, "h", cfg, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_add_host(fleet, NULL, cfg, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_add_host(fleet, "h", NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_add_host(fleet, "", cfg, &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_fleet_add_host(fleet, bad_utf8, cfg, &err), PSR_RESULT_INVALID_ARGUMENT);
    CHECK(psr_fleet_host_count(fleet) == 0);
    CHECK(psr_fleet_host_count(NULL) == 0);
    EXPECT_FAIL(psr_fleet_options_set_throttle(o, 0, &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_throttle(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_timeout_ms(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_connect_retries(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_retry_delay_ms(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_max_output(NULL, 1, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_OK(psr_fleet_options_set_max_output(o, 0, &err));
    EXPECT_FAIL(psr_fleet_cancel(NULL, &err), PSR_RESULT_NULL_ARGUMENT);

    /* a fleet without hosts returns at once, calling nothing */
    EXPECT_OK(psr_fleet_run_ps(fleet, "1", o, on_fleet_host, &seen, &err));
    CHECK(seen.calls == 0);

    EXPECT_OK(psr_fleet_add_host(fleet, "h", cfg, &err));
    CHECK(psr_fleet_host_count(fleet) == 1);
    EXPECT_FAIL(psr_fleet_run_ps(NULL, "1", o, on_fleet_host, &seen, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_run_ps(fleet, NULL, o, on_fleet_host, &seen, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_run_ps(fleet, "1", o, NULL, &seen, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_run_ps(fleet, bad_utf8, o, on_fleet_host, &seen, &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_fleet_run_cmd(fleet, NULL, NULL, 0, o, on_fleet_host, &seen, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_run_cmd(fleet, "echo", NULL, 1, o, on_fleet_host, &seen, &err), PSR_RESULT_NULL_ARGUMENT);
    /* nothing ran: no callback, no error object without an error pointer */
    CHECK(psr_fleet_run_ps(fleet, NULL, o, on_fleet_host, &seen, NULL) == PSR_RESULT_NULL_ARGUMENT);
    CHECK(seen.calls == 0);

    psr_fleet_options_free(o);
    psr_fleet_options_free(NULL);
    psr_fleet_free(fleet);
    psr_fleet_free(NULL);
    psr_config_free(cfg);
}

/* Healthy hosts on two endpoints, a wrong password, a port nobody listens on, a host whose
 * Receives stall past the per-host deadline: one callback per host, on the caller's thread, each
 * with its status, error code and JSON. */
static void test_fleet_mixed(void) {
    enum { GOOD_A1, GOOD_B1, WRONG, DEAD, STALLED, GOOD_A2, GOOD_B2, HOSTS };
    static const char *const names[HOSTS] = {"good-a1", "good-b1", "wrong-password", "unreachable",
                                             "stalled", "good-a2", "good-b2"};
    psr_error *err = NULL;
    psr_fleet *fleet = psr_fleet_new();
    psr_fleet_options *o = psr_fleet_options_new();
    fleet_seen seen;
    char dead[64], quoted[64], *attempts;
    int i;
    begin("fleet_mixed");
    fleet_seen_init(&seen);
    if (!CHECK(fleet != NULL && o != NULL && dead_url(dead, sizeof dead))) {
        psr_fleet_free(fleet);
        psr_fleet_options_free(o);
        return;
    }
    add_host(fleet, names[GOOD_A1], g_url, PASSWORD);
    add_host(fleet, names[GOOD_B1], g_url2, PASSWORD);
    add_host(fleet, names[WRONG], g_url, "not-the-password");
    add_host(fleet, names[DEAD], dead, PASSWORD);
    add_host(fleet, names[STALLED], g_stalled_url, PASSWORD);
    add_host(fleet, names[GOOD_A2], g_url, PASSWORD);
    add_host(fleet, names[GOOD_B2], g_url2, PASSWORD);
    CHECK(psr_fleet_host_count(fleet) == HOSTS);
    EXPECT_OK(psr_fleet_options_set_throttle(o, 3, &err));
    /* Long under valgrind, where a healthy host's run is slow too. */
    EXPECT_OK(psr_fleet_options_set_timeout_ms(o, g_valgrind ? 60000 : 4000, &err));
    EXPECT_OK(psr_fleet_options_set_connect_retries(o, 1, &err));
    EXPECT_OK(psr_fleet_options_set_retry_delay_ms(o, 50, &err));

    EXPECT_OK(psr_fleet_run_ps(fleet, "Write-Output 'hello'", o, on_fleet_host, &seen, &err));
    CHECK(seen.calls == HOSTS);
    CHECK(seen.off_thread == 0);
    CHECK(seen.bad_args == 0);
    for (i = 0; i < HOSTS; i++) {
        const char *json = seen.json[i];
        CHECK(seen.count[i] == 1);
        CHECK(seen.host[i] != NULL && strcmp(seen.host[i], names[i]) == 0);
        snprintf(quoted, sizeof quoted, "\"%s\"", names[i]);
        CHECK(member_is(json, "host", quoted));
        snprintf(quoted, sizeof quoted, "%d", i);
        CHECK(member_is(json, "index", quoted));
        attempts = json_member(json, "elapsed_ms");
        CHECK(attempts != NULL && attempts[0] >= '0' && attempts[0] <= '9');
        free(attempts);
        /* no password in any message or result */
        CHECK(!contains(json, "Passw0rd!") && !contains(json, "not-the-password"));
        CHECK(!contains(seen.message[i], "Passw0rd!") && !contains(seen.message[i], "not-the-password"));
    }
    for (i = 0; i < HOSTS; i++) {
        if (i != GOOD_A1 && i != GOOD_B1 && i != GOOD_A2 && i != GOOD_B2) {
            continue;
        }
        CHECK(seen.status[i] == PSR_HOST_STATUS_SUCCEEDED);
        CHECK(seen.code[i] == PSR_RESULT_OK && seen.message[i] == NULL);
        CHECK(member_is(seen.json[i], "status", "\"Succeeded\""));
        CHECK(member_is(seen.json[i], "attempts", "1"));
        CHECK(member_is(seen.json[i], "error", "null"));
        CHECK(member_has(seen.json[i], "result", "\"state\":\"Completed\""));
        CHECK(member_has(seen.json[i], "result", "\"output\":[\"hello\"]"));
        CHECK(member_has(seen.json[i], "result", "\"had_errors\":false"));
    }

    CHECK(seen.status[WRONG] == PSR_HOST_STATUS_FAILED);
    CHECK(seen.code[WRONG] == PSR_RESULT_AUTHENTICATION);
    CHECK(member_is(seen.json[WRONG], "attempts", "1")); /* a refused logon is not retried */
    CHECK(member_is(seen.json[WRONG], "result", "null"));
    CHECK(member_has(seen.json[WRONG], "error", "\"code\":\"PSR_RESULT_AUTHENTICATION\""));

    CHECK(seen.status[DEAD] == PSR_HOST_STATUS_UNREACHABLE);
    CHECK(seen.code[DEAD] == PSR_RESULT_CONNECT);
    CHECK(member_is(seen.json[DEAD], "status", "\"Unreachable\""));
    CHECK(member_is(seen.json[DEAD], "attempts", "2")); /* one retry */
    CHECK(member_has(seen.json[DEAD], "error", "\"code\":\"PSR_RESULT_CONNECT\""));

    CHECK(seen.status[STALLED] == PSR_HOST_STATUS_FAILED);
    CHECK(seen.code[STALLED] == PSR_RESULT_TIMEOUT);
    CHECK(contains(seen.message[STALLED], "the run on stalled did not finish within"));
    CHECK(member_is(seen.json[STALLED], "status", "\"Failed\""));
    CHECK(member_has(seen.json[STALLED], "error", "\"code\":\"PSR_RESULT_TIMEOUT\""));
    if (g_verbose) {
        for (i = 0; i < HOSTS; i++) {
            printf("    %s\n", seen.json[i] != NULL ? seen.json[i] : "(none)");
        }
    }
    fleet_seen_clear(&seen);
    psr_fleet_options_free(o);
    psr_fleet_free(fleet);
    check_nothing_left(g_url);
    check_nothing_left(g_url2);
    check_nothing_left(g_stalled_url);
}

/* A failing script and failing commands are answers: FAILED, no error object, the result in
 * the JSON; a script's result is the object psr_invocation_json gives for the same script. */
static void test_fleet_failures(void) {
    const char *script = "Write-Output 'before'; Invoke-Failure -Message 'fleet-says-no'";
    const char *const echo_args[1] = {"fleet"};
    const char *const exit_args[1] = {"3"};
    psr_error *err = NULL;
    psr_fleet *fleet = psr_fleet_new();
    psr_client *client;
    psr_pool *pool;
    psr_invocation *inv;
    fleet_seen seen;
    char *result;
    int i;
    begin("fleet_failures");
    fleet_seen_init(&seen);
    if (!CHECK(fleet != NULL)) {
        return;
    }
    add_host(fleet, "one", g_url, PASSWORD);
    add_host(fleet, "two", g_url2, PASSWORD);
    EXPECT_OK(psr_fleet_run_ps(fleet, script, NULL, on_fleet_host, &seen, &err));
    CHECK(seen.calls == 2 && seen.count[0] == 1 && seen.count[1] == 1);
    for (i = 0; i < 2; i++) {
        CHECK(seen.status[i] == PSR_HOST_STATUS_FAILED);
        CHECK(seen.code[i] == PSR_RESULT_OK && seen.message[i] == NULL);
        CHECK(member_is(seen.json[i], "error", "null"));
        CHECK(member_has(seen.json[i], "result", "\"state\":\"Failed\""));
        CHECK(member_has(seen.json[i], "result", "fleet-says-no"));
    }

    /* the same script through a pool: the same JSON */
    client = connect_client();
    pool = open_pool(client, NULL);
    inv = run_script(pool, script, NULL);
    if (CHECK(inv != NULL)) {
        result = json_member(seen.json[0], "result");
        CHECK(json_equals(result, psr_invocation_json(inv)));
        if (g_verbose || !json_equals(result, psr_invocation_json(inv))) {
            printf("    fleet:      %s\n    invocation: %s\n", result != NULL ? result : "(none)",
                   psr_invocation_json(inv));
        }
        free(result);
        psr_invocation_free(inv);
    }
    if (pool != NULL) {
        EXPECT_OK(psr_pool_close(pool, &err));
    }
    psr_pool_free(pool);
    psr_client_free(client);

    /* commands: an exit code of 0 succeeds, any other fails; the output is in the JSON */
    fleet_seen_clear(&seen);
    EXPECT_OK(psr_fleet_run_cmd(fleet, "echo", echo_args, 1, NULL, on_fleet_host, &seen, &err));
    CHECK(seen.calls == 2);
    for (i = 0; i < 2; i++) {
        CHECK(seen.status[i] == PSR_HOST_STATUS_SUCCEEDED && seen.code[i] == PSR_RESULT_OK);
        CHECK(member_has(seen.json[i], "result", "\"exit_code\":0"));
        CHECK(member_has(seen.json[i], "result", "\"stdout\":\"fleet"));
        CHECK(member_has(seen.json[i], "result", "\"stderr\":\"\""));
    }
    fleet_seen_clear(&seen);
    EXPECT_OK(psr_fleet_run_cmd(fleet, "exit", exit_args, 1, NULL, on_fleet_host, &seen, &err));
    CHECK(seen.calls == 2);
    for (i = 0; i < 2; i++) {
        CHECK(seen.status[i] == PSR_HOST_STATUS_FAILED && seen.code[i] == PSR_RESULT_OK);
        CHECK(member_is(seen.json[i], "status", "\"Failed\""));
        CHECK(member_has(seen.json[i], "result", "\"exit_code\":3"));
    }

    fleet_seen_clear(&seen);
    psr_fleet_free(fleet);
    check_nothing_left(g_url);
    check_nothing_left(g_url2);
}

/* The options every host shares: a session configuration for scripts; the shell's environment
 * and working directory, and stdin, for commands. */
static void test_fleet_options(void) {
    static const char stdin_text[] = "stdin for every host\n";
    psr_error *err = NULL;
    psr_fleet *fleet = psr_fleet_new();
    psr_fleet_options *o = psr_fleet_options_new();
    psr_cmd_shell_options *shell = psr_cmd_shell_options_new();
    fleet_seen seen;
    int i;
    begin("fleet_options");
    fleet_seen_init(&seen);
    if (!CHECK(fleet != NULL && o != NULL && shell != NULL)) {
        psr_fleet_free(fleet);
        psr_fleet_options_free(o);
        psr_cmd_shell_options_free(shell);
        return;
    }
    EXPECT_FAIL(psr_fleet_options_set_configuration_name(o, "", &err), PSR_RESULT_INVALID_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_configuration_name(o, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_shell_options(NULL, shell, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_skip_cmd_shell(NULL, false, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_fleet_options_set_stdin(o, NULL, 3, &err), PSR_RESULT_NULL_ARGUMENT);
    add_host(fleet, "a", g_url, PASSWORD);
    add_host(fleet, "b", g_url2, PASSWORD);

    /* the endpoint's "Restricted" configuration (no-language mode) refuses the script on every host */
    EXPECT_OK(psr_fleet_options_set_configuration_name(o, "Restricted", &err));
    EXPECT_OK(psr_fleet_run_ps(fleet, "Write-Output 'jea'", o, on_fleet_host, &seen, &err));
    CHECK(seen.calls == 2);
    for (i = 0; i < 2; i++) {
        CHECK(seen.status[i] == PSR_HOST_STATUS_FAILED && seen.code[i] == PSR_RESULT_OK);
        CHECK(member_has(seen.json[i], "result", "\"state\":\"Failed\""));
        CHECK(member_has(seen.json[i], "result", "\"id\":\"ScriptsNotAllowed\""));
    }

    /* a command reading stdin ends: stdin is closed when nothing is set */
    fleet_seen_clear(&seen);
    EXPECT_OK(psr_fleet_run_cmd(fleet, "cat", NULL, 0, o, on_fleet_host, &seen, &err));
    CHECK(seen.calls == 2);
    for (i = 0; i < 2; i++) {
        CHECK(seen.status[i] == PSR_HOST_STATUS_SUCCEEDED);
        CHECK(member_has(seen.json[i], "result", "\"stdout\":\"\""));
    }

    /* environment, working directory and stdin reach every host */
    EXPECT_OK(psr_cmd_shell_options_add_environment(shell, "FLEET_VAR", "from the fleet", &err));
    EXPECT_OK(psr_cmd_shell_options_set_working_directory(shell, "/tmp", &err));
    EXPECT_OK(psr_fleet_options_set_shell_options(o, shell, &err));
    psr_cmd_shell_options_free(shell); /* copied */
    EXPECT_OK(psr_fleet_options_set_skip_cmd_shell(o, false, &err));
    EXPECT_OK(psr_fleet_options_set_stdin(o, (const uint8_t *)stdin_text, strlen(stdin_text), &err));
    fleet_seen_clear(&seen);
    EXPECT_OK(psr_fleet_run_cmd(fleet, "echo $FLEET_VAR; pwd; cat", NULL, 0, o, on_fleet_host, &seen, &err));
    CHECK(seen.calls == 2);
    for (i = 0; i < 2; i++) {
        CHECK(seen.status[i] == PSR_HOST_STATUS_SUCCEEDED);
        CHECK(member_has(seen.json[i], "result",
                         "\"stdout\":\"from the fleet\\n/tmp\\nstdin for every host\\n\""));
    }
    fleet_seen_clear(&seen);
    psr_fleet_options_free(o);
    psr_fleet_free(fleet);
    check_nothing_left(g_url);
    check_nothing_left(g_url2);
}

/* The callback stops the run after the first host: every host is still reported, once. One host
 * at a time, and the second stalls, so the third cannot have started. */
static void test_fleet_callback_stop(void) {
    psr_error *err = NULL;
    psr_fleet *fleet = psr_fleet_new();
    psr_fleet_options *o = psr_fleet_options_new();
    fleet_seen seen;
    begin("fleet_callback_stop");
    fleet_seen_init(&seen);
    if (!CHECK(fleet != NULL && o != NULL)) {
        psr_fleet_free(fleet);
        psr_fleet_options_free(o);
        return;
    }
    add_host(fleet, "first", g_url, PASSWORD);
    add_host(fleet, "stalled", g_stalled_url, PASSWORD);
    add_host(fleet, "third", g_url2, PASSWORD);
    EXPECT_OK(psr_fleet_options_set_throttle(o, 1, &err));
    seen.stop_at = 1;
    EXPECT_FAIL(psr_fleet_run_ps(fleet, "Write-Output 'x'", o, on_fleet_host, &seen, &err), PSR_RESULT_CALLBACK);
    CHECK(seen.calls == 3 && seen.count[0] == 1 && seen.count[1] == 1 && seen.count[2] == 1);
    CHECK(seen.status[0] == PSR_HOST_STATUS_SUCCEEDED);
    CHECK(seen.status[1] == PSR_HOST_STATUS_FAILED && seen.code[1] == PSR_RESULT_CLOSED);
    CHECK(seen.status[2] == PSR_HOST_STATUS_FAILED && seen.code[2] == PSR_RESULT_CLOSED);
    CHECK(member_is(seen.json[2], "attempts", "0"));
    fleet_seen_clear(&seen);
    psr_fleet_options_free(o);
    psr_fleet_free(fleet);
    check_nothing_left(g_url);
    check_nothing_left(g_stalled_url);
}

typedef struct fleet_canceller {
    psr_fleet *fleet;
    const char *url;
    long pools_seen;
    psr_result rc;
    int on_main_thread;
} fleet_canceller;

/* Waits until both running hosts have their pools on the stalled endpoint, then cancels. */
static void *fleet_cancel_thread(void *arg) {
    fleet_canceller *c = (fleet_canceller *)arg;
    psr_error *err = NULL;
    c->pools_seen = wait_state_at(c->url, "pools", 2, g_valgrind ? 120000 : 30000);
    c->on_main_thread = pthread_equal(pthread_self(), g_main_thread) ? 1 : 0;
    c->rc = psr_fleet_cancel(c->fleet, &err);
    if (c->rc != PSR_RESULT_OK) {
        note_error("psr_fleet_cancel from a second thread", err);
    }
    psr_error_free(err);
    return NULL;
}

/* Hosts whose Receives stall forever, two at a time, no deadline: a cancel from another thread
 * makes the run return, the two running hosts cut off, the others reported without being
 * contacted; a cancelled fleet's next run contacts nobody. */
static void test_fleet_cancel(void) {
    enum { HOSTS = 6 };
    psr_error *err = NULL;
    psr_fleet *fleet = psr_fleet_new();
    psr_fleet_options *o = psr_fleet_options_new();
    fleet_seen seen;
    fleet_canceller c;
    pthread_t thread;
    char name[32];
    int i, contacted = 0, closed = 0;
    begin("fleet_cancel");
    fleet_seen_init(&seen);
    if (!CHECK(fleet != NULL && o != NULL)) {
        psr_fleet_free(fleet);
        psr_fleet_options_free(o);
        return;
    }
    for (i = 0; i < HOSTS; i++) {
        snprintf(name, sizeof name, "stalled-%d", i);
        add_host(fleet, name, g_stalled_url, PASSWORD);
    }
    EXPECT_OK(psr_fleet_options_set_throttle(o, 2, &err));
    memset(&c, 0, sizeof c);
    c.fleet = fleet;
    c.url = g_stalled_url;
    c.rc = PSR_RESULT_PANIC;
    if (!CHECK(pthread_create(&thread, NULL, fleet_cancel_thread, &c) == 0)) {
        psr_fleet_free(fleet);
        psr_fleet_options_free(o);
        return;
    }
    EXPECT_OK(psr_fleet_run_ps(fleet, "Write-Output 'never'", o, on_fleet_host, &seen, &err));
    pthread_join(thread, NULL);
    CHECK(c.pools_seen == 2);
    CHECK(c.rc == PSR_RESULT_OK);
    CHECK(!c.on_main_thread);
    CHECK(seen.calls == HOSTS && seen.off_thread == 0 && seen.bad_args == 0);
    for (i = 0; i < HOSTS; i++) {
        CHECK(seen.count[i] == 1);
        CHECK(seen.status[i] == PSR_HOST_STATUS_FAILED);
        closed += seen.code[i] == PSR_RESULT_CLOSED;
        contacted += !member_is(seen.json[i], "attempts", "0");
    }
    CHECK(closed == HOSTS);
    CHECK(contacted == 2); /* only the two running hosts were contacted */

    /* the cancellation is final: the next run reports every host at once, contacting none */
    fleet_seen_clear(&seen);
    EXPECT_OK(psr_fleet_run_ps(fleet, "Write-Output 'never'", o, on_fleet_host, &seen, &err));
    CHECK(seen.calls == HOSTS);
    for (i = 0; i < HOSTS; i++) {
        CHECK(seen.code[i] == PSR_RESULT_CLOSED && member_is(seen.json[i], "attempts", "0"));
    }
    CHECK(psr_fleet_cancel(fleet, NULL) == PSR_RESULT_OK); /* twice is harmless */
    fleet_seen_clear(&seen);
    psr_fleet_options_free(o);
    psr_fleet_free(fleet);
    check_nothing_left(g_stalled_url);
}

/* Opens a pool with an SSH configuration and expects `code`, the message holding `needle`. */
static void ssh_refused(psr_config *cfg, psr_result code, const char *needle) {
    psr_client *client = NULL;
    psr_pool *pool = (psr_pool *)SENTINEL;
    psr_error *err = NULL;
    if (!CHECK(cfg != NULL) || !EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        psr_config_free(cfg);
        return;
    }
    if (CHECK(psr_pool_open(client, NULL, NULL, &pool, &err) == code)) {
        if (!CHECK(contains(psr_error_message(err), needle))) {
            printf("    message: %s\n", psr_error_message(err));
        }
    }
    CHECK_UNTOUCHED(pool, psr_pool, psr_pool_free);
    psr_error_free(err);
    psr_client_free(client);
    psr_config_free(cfg);
}

static psr_config *ssh_config(const char *user, const char *known_hosts) {
    psr_config *cfg = psr_config_new_ssh("127.0.0.1", (uint16_t)atoi(g_ssh_port), user);
    psr_error *err = NULL;
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_ssh_known_hosts(cfg, known_hosts, &err));
        /* Generous, so that runs under valgrind do not trip it. */
        EXPECT_OK(psr_config_set_ssh_connect_timeout_ms(cfg, 60000, &err));
    }
    return cfg;
}

static void test_ssh(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = NULL;
    psr_pool *pool;
    psr_invocation *inv;
    psr_cmd_result *cmd = (psr_cmd_result *)SENTINEL;
    char accept_path[96];
    char *text;
    FILE *f;
    long n;
    int audit_before = log_counter(&g_log_audit_ssh);
    begin("ssh");
    if (!CHECK(g_ssh_port != NULL && g_ssh_user != NULL && g_ssh_key != NULL && g_ssh_wrong_key != NULL &&
               g_ssh_known_hosts != NULL && g_ssh_changed_known_hosts != NULL && g_ssh_empty_known_hosts != NULL &&
               g_ssh_fingerprint != NULL)) {
        printf("    PSREMOTE_SSH_* are needed (bindings-c/tests/run.sh starts psremote_testserver.sshd)\n");
        return;
    }
    /* misuse: bad arguments, SSH setters on a WS-Man configuration */
    CHECK(psr_config_new_ssh(NULL, 22, "u") == NULL);
    CHECK(psr_config_new_ssh("h", 22, NULL) == NULL);
    CHECK(psr_config_new_ssh("", 22, "u") == NULL);
    CHECK(psr_config_new_ssh("h", 22, "") == NULL);
    EXPECT_FAIL(psr_config_set_ssh_password(NULL, "x", &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_ssh_known_hosts(NULL, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    cfg = make_config(PASSWORD);
    EXPECT_FAIL(psr_config_set_ssh_password(cfg, "x", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_ssh_agent(cfg, NULL, &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_ssh_accept_unknown_host_key(cfg, true, &err), PSR_RESULT_INVALID_CONFIG);
    psr_config_free(cfg);
    cfg = ssh_config(g_ssh_user, g_ssh_known_hosts);
    EXPECT_FAIL(psr_config_set_ssh_key_file(cfg, NULL, NULL, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_ssh_subsystem(cfg, "", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_ssh_connect_timeout_ms(cfg, 0, &err), PSR_RESULT_INVALID_CONFIG);
    /* SSH reads no proxy from the environment: proxy credentials without a proxy URL, or a
     * proxy password without a user, would be dropped, so they are refused; an SSH
     * configuration does not become a process one */
    EXPECT_FAIL(psr_config_set_proxy(cfg, NULL, "proxyuser", "proxy-pw", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_proxy(cfg, NULL, NULL, "proxy-pw", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_proxy(cfg, "http://127.0.0.1:3128", NULL, "proxy-pw", &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_process(cfg, NULL, NULL, 0, &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_OK(psr_config_set_proxy(cfg, NULL, NULL, NULL, &err));

    /* a key logon: a pool, a pipeline; cmd shells are WS-Man's */
    if (CHECK(cfg != NULL) && EXPECT_OK(psr_config_set_ssh_key_file(cfg, g_ssh_key, NULL, &err)) &&
        EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        EXPECT_FAIL(psr_client_run_cmd(client, "whoami", NULL, 0, NULL, 0, &cmd, &err), PSR_RESULT_INVALID_CONFIG);
        CHECK_UNTOUCHED(cmd, psr_cmd_result, psr_cmd_result_free);
        pool = open_pool(client, NULL);
        inv = run_script(pool, "'hello over ssh'", NULL);
        CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), "\"hello over ssh\""));
        psr_invocation_free(inv);
        if (pool != NULL) {
            EXPECT_OK(psr_pool_close(pool, &err));
        }
        psr_pool_free(pool);
        psr_client_free(client);
        client = NULL;
    }
    psr_config_free(cfg);
    /* the audit connect event names the transport and the host key */
    CHECK(log_counter(&g_log_audit_ssh) > audit_before);

    /* a password logon */
    if (CHECK(g_ssh_password_user != NULL && g_ssh_password != NULL)) {
        cfg = ssh_config(g_ssh_password_user, g_ssh_known_hosts);
        if (CHECK(cfg != NULL) && EXPECT_OK(psr_config_set_ssh_password(cfg, g_ssh_password, &err)) &&
            EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
            pool = open_pool(client, NULL);
            inv = run_script(pool, "'by password'", NULL);
            CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), "\"by password\""));
            psr_invocation_free(inv);
            if (pool != NULL) {
                EXPECT_OK(psr_pool_close(pool, &err));
            }
            psr_pool_free(pool);
            psr_client_free(client);
            client = NULL;
        }
        psr_config_free(cfg);
        cfg = ssh_config(g_ssh_password_user, g_ssh_known_hosts);
        if (cfg != NULL) {
            EXPECT_OK(psr_config_set_ssh_password(cfg, "not-the-password", &err));
        }
        ssh_refused(cfg, PSR_RESULT_AUTHENTICATION, "refused the password");
    }

    /* refusals: a wrong key, an unknown host key, a changed one (also when unknown keys are accepted) */
    cfg = ssh_config(g_ssh_user, g_ssh_known_hosts);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_ssh_key_file(cfg, g_ssh_wrong_key, NULL, &err));
    }
    ssh_refused(cfg, PSR_RESULT_AUTHENTICATION, "publickey");
    cfg = ssh_config(g_ssh_user, g_ssh_empty_known_hosts);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_ssh_key_file(cfg, g_ssh_key, NULL, &err));
    }
    ssh_refused(cfg, PSR_RESULT_POLICY, g_ssh_fingerprint);
    cfg = ssh_config(g_ssh_user, g_ssh_changed_known_hosts);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_ssh_key_file(cfg, g_ssh_key, NULL, &err));
        EXPECT_OK(psr_config_set_ssh_accept_unknown_host_key(cfg, true, &err));
    }
    ssh_refused(cfg, PSR_RESULT_POLICY, "CHANGED");
    /* a subsystem the server does not have */
    cfg = ssh_config(g_ssh_user, g_ssh_known_hosts);
    if (cfg != NULL) {
        EXPECT_OK(psr_config_set_ssh_key_file(cfg, g_ssh_key, NULL, &err));
        EXPECT_OK(psr_config_set_ssh_subsystem(cfg, "no-such-subsystem", &err));
    }
    ssh_refused(cfg, PSR_RESULT_TRANSPORT, "no-such-subsystem");

    /* through a SOCKS5 proxy */
    if (CHECK(g_socks_url != NULL)) {
        cfg = ssh_config(g_ssh_user, g_ssh_known_hosts);
        if (CHECK(cfg != NULL) && EXPECT_OK(psr_config_set_ssh_key_file(cfg, g_ssh_key, NULL, &err)) &&
            EXPECT_OK(psr_config_set_proxy(cfg, g_socks_url, NULL, NULL, &err)) &&
            EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
            pool = open_pool(client, NULL);
            inv = run_script(pool, "'through socks'", NULL);
            CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), "\"through socks\""));
            psr_invocation_free(inv);
            if (pool != NULL) {
                EXPECT_OK(psr_pool_close(pool, &err));
            }
            psr_pool_free(pool);
            psr_client_free(client);
            client = NULL;
        }
        psr_config_free(cfg);
    }

    /* an unknown host key accepted when asked: warned, and recorded in the file */
    snprintf(accept_path, sizeof accept_path, "/tmp/psremote-c-known-hosts-%ld", (long)getpid());
    remove(accept_path);
    cfg = ssh_config(g_ssh_user, accept_path);
    if (CHECK(cfg != NULL) && EXPECT_OK(psr_config_set_ssh_key_file(cfg, g_ssh_key, NULL, &err)) &&
        EXPECT_OK(psr_config_set_ssh_accept_unknown_host_key(cfg, true, &err)) &&
        EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        int warned = log_counter(&g_log_audit_ssh_accepted);
        pool = open_pool(client, NULL);
        CHECK(pool != NULL && log_counter(&g_log_audit_ssh_accepted) == warned + 1);
        if (pool != NULL) {
            EXPECT_OK(psr_pool_close(pool, &err));
        }
        psr_pool_free(pool);
        psr_client_free(client);
        client = NULL;
        f = fopen(accept_path, "r");
        if (CHECK(f != NULL)) {
            text = (char *)calloc(1, 4096);
            n = text != NULL ? (long)fread(text, 1, 4095, f) : 0;
            CHECK(n > 0 && contains(text, "[127.0.0.1]:") && contains(text, "ssh-ed25519"));
            free(text);
            fclose(f);
        }
    }
    psr_config_free(cfg);
    remove(accept_path);
}

/* transport "process" (issue 15): the endpoint's out-of-process mode (python -m psremote_testserver
   --out-of-proc) started by each pool as a local program, spoken to over its stdin and stdout. */
static void test_process(void) {
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = NULL;
    psr_pool *pool = NULL;
    psr_pipeline *pl = NULL;
    psr_invocation *inv = NULL;
    psr_cmd_result *res = NULL;
    psr_result r;
    const char *python = getenv("PSREMOTE_PYTHON");
    const char *const args[3] = {"-m", "psremote_testserver", "--out-of-proc"};
    const char *const args_with_null[2] = {"-m", NULL};
    const char *const crash[5] = {"-m", "psremote_testserver", "--out-of-proc", "--misbehave", "exit-stderr"};
    begin("process");
    if (!CHECK(python != NULL && python[0] != '\0')) {
        return;
    }
    cfg = psr_config_new("http://localhost", "", "");
    if (!CHECK(cfg != NULL)) {
        return;
    }
    EXPECT_FAIL(psr_config_set_process(NULL, python, args, 3, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_FAIL(psr_config_set_process(cfg, "", args, 3, &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_process(cfg, python, args_with_null, 2, &err), PSR_RESULT_NULL_ARGUMENT);
    EXPECT_OK(psr_config_set_process(cfg, python, args, 3, &err));
    if (EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        pool = open_pool(client, NULL);
        inv = run_script(pool, "Write-Output 'over stdio'; Write-Warning 'careful'", NULL);
        if (CHECK(inv != NULL)) {
            CHECK(psr_invocation_state(inv) == PSR_STATE_COMPLETED);
            CHECK(psr_invocation_output_count(inv) == 1);
            CHECK(json_equals(psr_invocation_output_json(inv, 0), "\"over stdio\""));
            CHECK(json_contains(psr_invocation_json(inv), "\"warnings\":[") &&
                  contains(psr_invocation_json(inv), "careful"));
            psr_invocation_free(inv);
        }
        /* cmd shells are WS-Man only */
        EXPECT_FAIL(psr_client_run_cmd(client, "echo", NULL, 0, NULL, 0, &res, &err), PSR_RESULT_INVALID_CONFIG);
        CHECK(res == NULL);
        if (pool != NULL) {
            EXPECT_OK(psr_pool_close(pool, &err));
            psr_pool_free(pool);
            pool = NULL;
        }
        psr_client_free(client);
        client = NULL;
    }
    /* a server that crashes on the pipeline's Command: TRANSPORT, its stderr in the message */
    EXPECT_OK(psr_config_set_process(cfg, python, crash, 5, &err));
    if (EXPECT_OK(psr_client_connect(cfg, &client, &err)) && EXPECT_OK(psr_pool_open(client, NULL, NULL, &pool, &err))) {
        r = psr_pool_start_script(pool, "Write-Output 1", false, &pl, &err);
        if (r == PSR_RESULT_OK) {
            r = psr_pipeline_wait(pl, NULL, 0, &inv, &err);
            psr_pipeline_free(pl);
        }
        CHECK(r == PSR_RESULT_TRANSPORT);
        CHECK(err != NULL && contains(psr_error_message(err), "simulated crash") &&
              contains(psr_error_message(err), "exited with status 3"));
        psr_error_free(err);
        err = NULL;
        if (r == PSR_RESULT_OK) {
            psr_invocation_free(inv);
        }
        psr_pool_close(pool, NULL);
        psr_pool_free(pool);
    }
    psr_client_free(client);
    psr_config_free(cfg);
}

static void test_fleet(void) {
    begin("fleet");
    if (!CHECK(g_url2 != NULL && g_url2[0] != '\0' && g_stalled_url != NULL && g_stalled_url[0] != '\0')) {
        printf("       PSREMOTE_URL2 and PSREMOTE_STALLED_URL must name the fleet's endpoints (run.sh starts them)\n");
        return;
    }
    test_fleet_misuse();
    test_fleet_mixed();
    test_fleet_failures();
    test_fleet_options();
    test_fleet_callback_stop();
    test_fleet_cancel();
}

/* Connects with `cfg`, runs one script and returns the connection info JSON (free it), or NULL. */
static char *proxy_round_trip(psr_config *cfg, const char *word) {
    psr_error *err = NULL;
    psr_client *client = NULL;
    psr_pool *pool;
    psr_invocation *inv;
    char *json = NULL;
    char script[64], expect[64];
    if (!EXPECT_OK(psr_client_connect(cfg, &client, &err))) {
        return NULL;
    }
    snprintf(script, sizeof script, "'%s'", word);
    snprintf(expect, sizeof expect, "\"%s\"", word);
    pool = open_pool(client, NULL);
    inv = run_script(pool, script, NULL);
    CHECK(inv != NULL && json_equals(psr_invocation_output_json(inv, 0), expect));
    psr_invocation_free(inv);
    if (pool != NULL) {
        EXPECT_OK(psr_pool_close(pool, &err));
    }
    psr_pool_free(pool);
    if (!EXPECT_OK(psr_client_connection_info_json(client, &json, &err))) {
        json = NULL;
    }
    psr_client_free(client);
    return json;
}

/* Proxies (run.sh starts them): the endpoint through tinyproxy's CONNECT tunnel with the
 * credentials given apart and through microsocks with socks5h, PowerShell over each, the proxy
 * named in the connection info without its password; a wrong proxy password and a proxy that is
 * not there are PSR_RESULT_PROXY naming the proxy; a URL that cannot be used is INVALID_CONFIG;
 * psr_config_set_ignore_proxy with no proxy set connects directly. */
static void test_proxy(void) {
    static const char *const proxy_user = "proxyuser";
    static const char *const proxy_password = "s3cret-proxy-pass";
    psr_error *err = NULL;
    psr_config *cfg;
    psr_client *client = (psr_client *)SENTINEL;
    char *json;
    char expect[256], socks5h[128], dead[64];
    struct sockaddr_in addr;
    socklen_t alen = sizeof addr;
    int fd;
    begin("proxy");
    CHECK(strcmp(psr_result_name(PSR_RESULT_PROXY), "PSR_RESULT_PROXY") == 0);
    CHECK(psr_config_set_proxy(NULL, "http://127.0.0.1:1", NULL, NULL, NULL) == PSR_RESULT_NULL_ARGUMENT);
    CHECK(psr_config_set_ignore_proxy(NULL, true, NULL) == PSR_RESULT_NULL_ARGUMENT);
    if (!CHECK(g_proxy_url != NULL && g_socks_url != NULL)) {
        printf("    PSREMOTE_PROXY_URL and PSREMOTE_SOCKS_URL are needed (bindings-c/tests/run.sh sets them)\n");
        return;
    }
    cfg = make_config(PASSWORD);
    if (!CHECK(cfg != NULL)) {
        return;
    }
    EXPECT_OK(psr_config_set_auth(cfg, "ntlm", &err));

    /* tinyproxy, credentials given apart */
    EXPECT_OK(psr_config_set_proxy(cfg, g_proxy_url, proxy_user, proxy_password, &err));
    json = proxy_round_trip(cfg, "through connect");
    if (CHECK(json != NULL)) {
        snprintf(expect, sizeof expect, "\"proxy\": \"%s\"", g_proxy_url);
        CHECK(json_contains(json, expect));
        CHECK(json_contains(json, "\"encryption\": \"message-encryption\""));
        CHECK(!contains(json, proxy_password));
        psr_string_free(json);
    }

    /* a wrong proxy password: named proxy, no password in the message */
    EXPECT_OK(psr_config_set_proxy(cfg, g_proxy_url, proxy_user, "wrong-proxy-pass", &err));
    if (expect_fail_keep_at(psr_client_connect(cfg, &client, &err), &err, PSR_RESULT_PROXY, "wrong proxy password",
                            __FILE__, __LINE__)) {
        CHECK(contains(psr_error_message(err), g_proxy_url));
        CHECK(contains(psr_error_message(err), "refused the proxy credentials"));
        CHECK(!contains(psr_error_message(err), "wrong-proxy-pass"));
    }
    psr_error_free(err);
    err = NULL;
    CHECK_UNTOUCHED(client, psr_client, psr_client_free);

    /* microsocks with socks5h */
    snprintf(socks5h, sizeof socks5h, "socks5h://127.0.0.1:%d", url_port(g_socks_url));
    EXPECT_OK(psr_config_set_proxy(cfg, socks5h, NULL, NULL, &err));
    json = proxy_round_trip(cfg, "through socks");
    if (CHECK(json != NULL)) {
        snprintf(expect, sizeof expect, "\"proxy\": \"%s\"", socks5h);
        CHECK(json_contains(json, expect));
        psr_string_free(json);
    }

    /* URLs that cannot be used, and a proxy that is not there */
    EXPECT_FAIL(psr_config_set_proxy(cfg, "https://u:secret@127.0.0.1:1", NULL, NULL, &err), PSR_RESULT_INVALID_CONFIG);
    EXPECT_FAIL(psr_config_set_proxy(cfg, "socks4://127.0.0.1:1", NULL, NULL, &err), PSR_RESULT_INVALID_CONFIG);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
              getsockname(fd, (struct sockaddr *)&addr, &alen) == 0)) {
        snprintf(dead, sizeof dead, "http://127.0.0.1:%u", (unsigned)ntohs(addr.sin_port));
        close(fd);
        EXPECT_OK(psr_config_set_proxy(cfg, dead, NULL, NULL, &err));
        if (expect_fail_keep_at(psr_client_connect(cfg, &client, &err), &err, PSR_RESULT_PROXY, "no proxy there",
                                __FILE__, __LINE__)) {
            CHECK(contains(psr_error_message(err), dead));
        }
        psr_error_free(err);
        err = NULL;
    } else if (fd >= 0) {
        close(fd);
    }

    /* no proxy set and the environment ignored: direct */
    EXPECT_OK(psr_config_set_proxy(cfg, NULL, NULL, NULL, &err));
    EXPECT_OK(psr_config_set_ignore_proxy(cfg, true, &err));
    json = proxy_round_trip(cfg, "direct");
    if (CHECK(json != NULL)) {
        CHECK(json_contains(json, "\"proxy\": null"));
        psr_string_free(json);
    }
    psr_config_free(cfg);
}

int main(void) {
    psr_client *client;
    psr_pool *pool;
    const char *verbose = getenv("PSR_TEST_VERBOSE");
    g_verbose = verbose != NULL && verbose[0] != '\0' && strcmp(verbose, "0") != 0;
    g_main_thread = pthread_self();
    g_url = getenv("PSREMOTE_URL");
    g_https_url = getenv("PSREMOTE_HTTPS_URL");
    g_certs = getenv("PSREMOTE_CERTS");
    g_server_pin = getenv("PSREMOTE_SERVER_PIN");
    g_server_sha256 = getenv("PSREMOTE_SERVER_SHA256");
    g_krb_url = getenv("PSREMOTE_KRB_URL");
    g_krb_kdc = getenv("PSREMOTE_KRB_KDC");
    g_krb_realm = getenv("PSREMOTE_KRB_REALM");
    g_valgrind = getenv("PSR_TEST_VALGRIND") != NULL;
    g_url2 = getenv("PSREMOTE_URL2");
    g_stalled_url = getenv("PSREMOTE_STALLED_URL");
    g_proxy_url = getenv("PSREMOTE_PROXY_URL");
    g_socks_url = getenv("PSREMOTE_SOCKS_URL");
    g_ssh_port = getenv("PSREMOTE_SSH_PORT");
    g_ssh_user = getenv("PSREMOTE_SSH_USER");
    g_ssh_key = getenv("PSREMOTE_SSH_KEY");
    g_ssh_wrong_key = getenv("PSREMOTE_SSH_WRONG_KEY");
    g_ssh_known_hosts = getenv("PSREMOTE_SSH_KNOWN_HOSTS");
    g_ssh_changed_known_hosts = getenv("PSREMOTE_SSH_CHANGED_KNOWN_HOSTS");
    g_ssh_empty_known_hosts = getenv("PSREMOTE_SSH_EMPTY_KNOWN_HOSTS");
    g_ssh_fingerprint = getenv("PSREMOTE_SSH_FINGERPRINT");
    g_ssh_password_user = getenv("PSREMOTE_SSH_PASSWORD_USER");
    g_ssh_password = getenv("PSREMOTE_SSH_PASSWORD");
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("psremote %s, endpoint %s\n", psr_version(), g_url != NULL ? g_url : "(unset)");
    if (g_url == NULL || g_url[0] == '\0') {
        printf("PSREMOTE_URL is not set\n0 passed, 1 failed\n");
        return 1;
    }

    test_version_and_names();
    test_null_arguments();
    test_bad_config();

    /* logging at info and more severe */
    psr_set_log_callback(log_callback, &g_log_userdata_token, 3);

    test_connect_failures();
    test_reader_limits();
    client = connect_client();
    pool = open_pool(client, NULL);

    begin("log_callback");
    pthread_mutex_lock(&g_log_lock);
    CHECK(g_log_count > 0);
    CHECK(g_log_connected > 0);
    CHECK(g_log_count == 0 || (g_log_min_level >= 1 && g_log_max_level <= 3));
    CHECK(g_log_bad_args == 0);
    pthread_mutex_unlock(&g_log_lock);

    test_null_arguments_live(client, pool);
    test_cmd(client);
    test_cmd_shell_misuse(client);
    test_cmd_shell(client);
    test_streams(pool);
    test_output_values(pool);
    test_start_command(pool);
    test_pipeline_input(pool);
    test_failure(pool);
    test_callback_error(pool);
    test_stop_from_thread(pool);
    test_wait_timeout(pool);
    test_host(client);
    test_pool_fault(client);
    test_use_after_close(client);
    test_two_pools_one_client(client);
    test_sessions(client);
    test_server_and_metadata(client, pool);
    test_files(client);
    test_deadlines(client);
    test_security_policy();
    test_https();
    test_kerberos();
    test_credssp();
    test_proxy();
    test_ssh();

    if (pool != NULL) {
        psr_error *err = NULL;
        begin("close");
        EXPECT_OK(psr_pool_close(pool, &err));
        psr_pool_free(pool);
    }
    psr_client_free(client);

    test_fleet();
    test_process();
    test_log_records();
    test_log_off();
    test_final_state();
    psr_set_log_callback(NULL, NULL, 0);

    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed == 0 ? 0 : 1;
}
