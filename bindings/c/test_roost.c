/*
 * The roost C ABI, tested from C: what a C program sees, including misuse
 * that must return an error code instead of crashing. run-tests.sh builds
 * it with -Wall -Wextra -Werror against include/roost.h, runs it, and runs
 * it again under valgrind.
 *
 * Usage: test_roost [test-name]   (no argument: every test)
 * Prints one "ok"/"not ok" line per test and "N passed, N failed" at the end.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "roost.h"

#ifndef ROOST_EXPECTED_VERSION
#error "build with -DROOST_EXPECTED_VERSION=\"x.y.z\" (the version in Cargo.toml)"
#endif

#define TEXT(s) (const uint8_t *)(s), strlen(s)

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

#define CHECK_RC(call, want)                                                               \
    do {                                                                                   \
        roost_result rc_ = (call);                                                         \
        if (rc_ != (want)) {                                                               \
            char detail_[512];                                                             \
            roost_last_error(detail_, sizeof detail_);                                     \
            fprintf(stderr, "  %s:%d: %s returned %s, want %s (last error: %s)\n",         \
                    __FILE__, __LINE__, #call, roost_result_name(rc_),                     \
                    roost_result_name(want), detail_);                                     \
            return 1;                                                                      \
        }                                                                                  \
    } while (0)

/* ---- fixtures ---------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A fresh data directory under /tmp, removed by remove_dir. */
static char *make_dir(void) {
    char *dir = malloc(64);
    if (dir == NULL) {
        return NULL;
    }
    strcpy(dir, "/tmp/roost-c-test-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        free(dir);
        return NULL;
    }
    return dir;
}

static void remove_dir(char *dir) {
    if (dir != NULL) {
        nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(dir);
    }
}

static roost_result open_engine(const char *dir, const char *durability, roost_engine **out) {
    char config[512];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"durability\": \"%s\"}", dir,
             durability);
    return roost_engine_open(config, out);
}

static int last_error_contains(const char *needle) {
    char detail[512];
    roost_last_error(detail, sizeof detail);
    return strstr(detail, needle) != NULL;
}

static int bytes_contain(roost_bytes bytes, const char *needle) {
    size_t len = strlen(needle);
    for (size_t i = 0; i + len <= bytes.len; i++) {
        if (memcmp(bytes.ptr + i, needle, len) == 0) {
            return 1;
        }
    }
    return 0;
}

static int bytes_equal(roost_bytes bytes, const char *want) {
    size_t len = strlen(want);
    return bytes.len == len && (len == 0 || memcmp(bytes.ptr, want, len) == 0);
}

/* ---- basics ------------------------------------------------------------ */

static int test_version_matches_cargo_toml(void) {
    const char *version = roost_version();
    CHECK(version != NULL);
    CHECK(strcmp(version, ROOST_EXPECTED_VERSION) == 0);
    return 0;
}

static int test_counter_kv_sql_list_and_delete(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "memory", &engine), ROOST_OK);

    int64_t value = -1;
    CHECK_RC(roost_counter_get(engine, TEXT("room"), TEXT("hits"), &value), ROOST_OK);
    CHECK(value == 0);
    CHECK_RC(roost_counter_add(engine, TEXT("room"), TEXT("hits"), 5, &value), ROOST_OK);
    CHECK(value == 5);
    CHECK_RC(roost_counter_add(engine, TEXT("room"), TEXT("hits"), -7, &value), ROOST_OK);
    CHECK(value == -2);

    roost_bytes out = {0};
    CHECK_RC(roost_kv_get(engine, TEXT("room"), TEXT("k"), &out), ROOST_NOT_FOUND);
    CHECK(out.ptr == NULL && out.len == 0);
    static const uint8_t binary[] = {0x00, 0xff, 0x10, 0x00};
    CHECK_RC(roost_kv_put(engine, TEXT("room"), TEXT("k"), binary, sizeof binary), ROOST_OK);
    CHECK_RC(roost_kv_get(engine, TEXT("room"), TEXT("k"), &out), ROOST_OK);
    CHECK(out.len == sizeof binary && memcmp(out.ptr, binary, sizeof binary) == 0);
    roost_bytes_free(out);
    CHECK_RC(roost_kv_put(engine, TEXT("room"), TEXT("empty"), NULL, 0), ROOST_OK);
    roost_bytes empty = {0};
    CHECK_RC(roost_kv_get(engine, TEXT("room"), TEXT("empty"), &empty), ROOST_OK);
    CHECK(empty.len == 0 && empty.ptr == NULL);
    roost_bytes_free(empty);

    CHECK_RC(roost_kv_put(engine, TEXT("room"), TEXT("list/a"), TEXT("1")), ROOST_OK);
    CHECK_RC(roost_kv_put(engine, TEXT("room"), TEXT("list/b"), TEXT("2")), ROOST_OK);
    roost_bytes page = {0};
    CHECK_RC(roost_kv_list(engine, TEXT("room"), TEXT("{\"prefix\": \"list/\", \"values\": true}"),
                           &page),
             ROOST_OK);
    CHECK(bytes_contain(page, "{\"key\":\"list/a\","));
    CHECK(bytes_contain(page, "\"value\":\"2\"}],\"cursor\":null}"));
    roost_bytes_free(page);

    roost_bytes answer = {0};
    CHECK_RC(roost_sql(engine, TEXT("room"),
                       TEXT("{\"statements\": [{\"sql\": \"CREATE TABLE t (x INTEGER)\"},"
                            "{\"sql\": \"INSERT INTO t VALUES (?), (?)\", \"params\": [1, 2]},"
                            "{\"sql\": \"SELECT sum(x) AS total FROM t\"}]}"),
                       &answer),
             ROOST_OK);
    const char *want_tail = "{\"columns\":[\"total\"],\"rows\":[[3]],\"rows_affected\":0,"
                            "\"last_insert_rowid\":null}]}";
    CHECK(answer.len > strlen(want_tail));
    CHECK(memcmp(answer.ptr + answer.len - strlen(want_tail), want_tail, strlen(want_tail)) == 0);
    roost_bytes_free(answer);

    CHECK_RC(roost_kv_delete(engine, TEXT("room"), TEXT("k")), ROOST_OK);
    CHECK_RC(roost_kv_delete(engine, TEXT("room"), TEXT("k")), ROOST_OK);
    CHECK_RC(roost_kv_get(engine, TEXT("room"), TEXT("k"), &out), ROOST_NOT_FOUND);

    roost_bytes actors = {0};
    CHECK_RC(roost_actor_list(engine, NULL, 0, &actors), ROOST_OK);
    CHECK(bytes_contain(actors, "\"id\":\"room\""));
    roost_bytes_free(actors);
    bool existed = false;
    CHECK_RC(roost_actor_delete(engine, TEXT("room"), &existed), ROOST_OK);
    CHECK(existed);
    CHECK_RC(roost_counter_get(engine, TEXT("room"), TEXT("hits"), &value), ROOST_OK);
    CHECK(value == 0);

    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_durable_data_survives_close_and_reopen(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "durable", &engine), ROOST_OK);
    int64_t value = 0;
    CHECK_RC(roost_counter_add(engine, TEXT("user:7"), TEXT("logins"), 3, &value), ROOST_OK);
    CHECK_RC(roost_kv_put(engine, TEXT("user:7"), TEXT("name"), TEXT("grace")), ROOST_OK);
    roost_bytes answer = {0};
    CHECK_RC(roost_sql(engine, TEXT("user:7"),
                       TEXT("{\"sql\": \"CREATE TABLE notes (body TEXT); "
                            "INSERT INTO notes VALUES ('kept')\"}"),
                       &answer),
             ROOST_OK);
    roost_bytes_free(answer);
    roost_engine_close(engine);

    engine = NULL;
    CHECK_RC(open_engine(dir, "durable", &engine), ROOST_OK);
    CHECK_RC(roost_counter_get(engine, TEXT("user:7"), TEXT("logins"), &value), ROOST_OK);
    CHECK(value == 3);
    roost_bytes name = {0};
    CHECK_RC(roost_kv_get(engine, TEXT("user:7"), TEXT("name"), &name), ROOST_OK);
    CHECK(bytes_equal(name, "grace"));
    roost_bytes_free(name);
    CHECK_RC(roost_sql(engine, TEXT("user:7"), TEXT("{\"sql\": \"SELECT body FROM notes\"}"),
                       &answer),
             ROOST_OK);
    CHECK(bytes_contain(answer, "[[\"kept\"]]"));
    roost_bytes_free(answer);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_compare_and_set(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "memory", &engine), ROOST_OK);
    int64_t v1 = 0, v2 = 0, untouched = -9;
    CHECK_RC(roost_kv_put_if(engine, TEXT("cas"), TEXT("k"), TEXT("a"), ROOST_VERSION_ABSENT, &v1),
             ROOST_OK);
    CHECK(v1 > 0);
    CHECK_RC(roost_kv_put_if(engine, TEXT("cas"), TEXT("k"), TEXT("b"), ROOST_VERSION_ABSENT,
                             &untouched),
             ROOST_VERSION_MISMATCH);
    CHECK(untouched == -9);
    CHECK_RC(roost_kv_put_if(engine, TEXT("cas"), TEXT("k"), TEXT("b"), v1, &v2), ROOST_OK);
    CHECK(v2 > v1);
    roost_bytes value = {0};
    int64_t version = 0;
    CHECK_RC(roost_kv_get_versioned(engine, TEXT("cas"), TEXT("k"), &value, &version), ROOST_OK);
    CHECK(version == v2 && bytes_equal(value, "b"));
    roost_bytes_free(value);
    bool existed = false;
    CHECK_RC(roost_kv_delete_if(engine, TEXT("cas"), TEXT("k"), v1, &existed),
             ROOST_VERSION_MISMATCH);
    CHECK_RC(roost_kv_delete_if(engine, TEXT("cas"), TEXT("k"), v2, &existed), ROOST_OK);
    CHECK(existed);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_export_and_import(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "durable", &engine), ROOST_OK);
    int64_t value = 0;
    CHECK_RC(roost_counter_add(engine, TEXT("from"), TEXT("n"), 9, &value), ROOST_OK);
    roost_bytes db = {0};
    CHECK_RC(roost_actor_export(engine, TEXT("from"), &db), ROOST_OK);
    CHECK(db.len > 16 && memcmp(db.ptr, "SQLite format 3", 16) == 0);
    CHECK_RC(roost_actor_import(engine, TEXT("to"), db.ptr, db.len), ROOST_OK);
    roost_bytes_free(db);
    CHECK_RC(roost_counter_get(engine, TEXT("to"), TEXT("n"), &value), ROOST_OK);
    CHECK(value == 9);
    CHECK_RC(roost_actor_import(engine, TEXT("to"), TEXT("garbage")), ROOST_INVALID_REQUEST);
    CHECK_RC(roost_actor_import(engine, TEXT("to"), NULL, 10), ROOST_NULL_POINTER);
    CHECK_RC(roost_actor_export(engine, TEXT("nobody"), &db), ROOST_NOT_FOUND);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

/* ---- misuse ------------------------------------------------------------ */

static int test_null_engine_and_null_pointers(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "memory", &engine), ROOST_OK);
    int64_t value = 77;
    roost_bytes out = {0};

    CHECK_RC(roost_counter_add(NULL, TEXT("a"), TEXT("n"), 1, &value), ROOST_NULL_POINTER);
    CHECK(value == 77);
    CHECK(last_error_contains("engine is NULL"));
    CHECK_RC(roost_kv_get(NULL, TEXT("a"), TEXT("k"), &out), ROOST_NULL_POINTER);
    CHECK_RC(roost_sql(NULL, TEXT("a"), TEXT("{}"), &out), ROOST_NULL_POINTER);

    /* NULL with a non-zero length, for every kind of argument. */
    CHECK_RC(roost_counter_add(engine, NULL, 4, TEXT("n"), 1, &value), ROOST_NULL_POINTER);
    CHECK_RC(roost_counter_add(engine, TEXT("a"), NULL, 4, 1, &value), ROOST_NULL_POINTER);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), NULL, 3, TEXT("v")), ROOST_NULL_POINTER);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), TEXT("k"), NULL, 3), ROOST_NULL_POINTER);
    CHECK_RC(roost_sql(engine, TEXT("a"), NULL, 12, &out), ROOST_NULL_POINTER);
    CHECK_RC(roost_kv_list(engine, TEXT("a"), NULL, 2, &out), ROOST_NULL_POINTER);

    /* NULL with a zero length is an empty argument: an empty ID is invalid. */
    CHECK_RC(roost_counter_add(engine, NULL, 0, TEXT("n"), 1, &value), ROOST_INVALID_ACTOR_ID);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), NULL, 0, TEXT("v")), ROOST_INVALID_REQUEST);

    /* NULL out-params are refused before anything runs. */
    CHECK_RC(roost_counter_add(engine, TEXT("a"), TEXT("n"), 1, NULL), ROOST_NULL_POINTER);
    CHECK_RC(roost_counter_get(engine, TEXT("a"), TEXT("n"), &value), ROOST_OK);
    CHECK(value == 0);
    CHECK_RC(roost_counter_get(engine, TEXT("a"), TEXT("n"), NULL), ROOST_NULL_POINTER);
    CHECK_RC(roost_kv_get(engine, TEXT("a"), TEXT("k"), NULL), ROOST_NULL_POINTER);
    CHECK_RC(roost_sql(engine, TEXT("a"), TEXT("{\"sql\": \"SELECT 1\"}"), NULL),
             ROOST_NULL_POINTER);
    CHECK_RC(roost_kv_list(engine, TEXT("a"), NULL, 0, NULL), ROOST_NULL_POINTER);
    CHECK_RC(roost_actor_list(engine, NULL, 0, NULL), ROOST_NULL_POINTER);
    CHECK_RC(roost_actor_info(engine, TEXT("a"), NULL), ROOST_NULL_POINTER);
    CHECK(last_error_contains("out_json"));
    /* Optional out-params may be NULL. */
    CHECK_RC(roost_kv_put_if(engine, TEXT("a"), TEXT("k"), TEXT("v"), ROOST_VERSION_ABSENT, NULL),
             ROOST_OK);
    CHECK_RC(roost_kv_delete_if(engine, TEXT("a"), TEXT("k"), 999, NULL), ROOST_VERSION_MISMATCH);
    CHECK_RC(roost_actor_delete(engine, TEXT("a"), NULL), ROOST_OK);

    CHECK_RC(roost_engine_open("{}", NULL), ROOST_NULL_POINTER);
    roost_engine *never = NULL;
    CHECK_RC(roost_engine_open(NULL, &never), ROOST_NULL_POINTER);
    CHECK(never == NULL);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_invalid_utf8_and_bad_ids(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "memory", &engine), ROOST_OK);
    static const uint8_t bad[] = {'a', 0xc3, 0x28};
    int64_t value = 0;
    roost_bytes out = {0};
    CHECK_RC(roost_counter_add(engine, bad, sizeof bad, TEXT("n"), 1, &value), ROOST_INVALID_UTF8);
    CHECK_RC(roost_counter_add(engine, TEXT("a"), bad, sizeof bad, 1, &value), ROOST_INVALID_UTF8);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), bad, sizeof bad, TEXT("v")), ROOST_INVALID_UTF8);
    CHECK_RC(roost_kv_get(engine, TEXT("a"), bad, sizeof bad, &out), ROOST_INVALID_UTF8);
    CHECK_RC(roost_sql(engine, TEXT("a"), bad, sizeof bad, &out), ROOST_INVALID_UTF8);
    /* Any bytes are a fine value. */
    CHECK_RC(roost_kv_put(engine, TEXT("a"), TEXT("k"), bad, sizeof bad), ROOST_OK);

    CHECK_RC(roost_counter_add(engine, TEXT(""), TEXT("n"), 1, &value), ROOST_INVALID_ACTOR_ID);
    CHECK_RC(roost_counter_add(engine, TEXT("tab\there"), TEXT("n"), 1, &value),
             ROOST_INVALID_ACTOR_ID);
    /* An embedded NUL is a control character, even though the length covers it. */
    CHECK_RC(roost_counter_add(engine, (const uint8_t *)"a\0b", 3, TEXT("n"), 1, &value),
             ROOST_INVALID_ACTOR_ID);
    char long_id[600];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    CHECK_RC(roost_counter_add(engine, TEXT(long_id), TEXT("n"), 1, &value),
             ROOST_INVALID_ACTOR_ID);
    CHECK(last_error_contains("ROOST_INVALID_ACTOR_ID"));

    CHECK_RC(roost_sql(engine, TEXT("a"), TEXT("{\"sql\": "), &out), ROOST_INVALID_REQUEST);
    CHECK_RC(roost_sql(engine, TEXT("a"), TEXT("{\"sql\": \"SELEKT 1\"}"), &out), ROOST_SQL_ERROR);
    CHECK_RC(roost_sql(engine, TEXT("a"), TEXT("{\"sql\": \"ATTACH 'x.db' AS x\"}"), &out),
             ROOST_SQL_DENIED);
    CHECK_RC(roost_kv_list(engine, TEXT("a"), TEXT("{\"bogus\": 1}"), &out), ROOST_INVALID_REQUEST);
    CHECK(out.ptr == NULL && out.len == 0);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_oversized_keys_and_values(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    char config[512];
    snprintf(config, sizeof config,
             "{\"data_dir\": \"%s\", \"durability\": \"memory\", \"max_key_bytes\": 16, "
             "\"max_value_bytes\": 64, \"max_body_bytes\": 128}",
             dir);
    roost_engine *engine = NULL;
    CHECK_RC(roost_engine_open(config, &engine), ROOST_OK);
    uint8_t big[1024];
    memset(big, 'v', sizeof big);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), TEXT("0123456789abcdef"), big, 64), ROOST_OK);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), TEXT("0123456789abcdefX"), big, 1), ROOST_TOO_LARGE);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), TEXT("k"), big, 65), ROOST_TOO_LARGE);
    CHECK(last_error_contains("limit"));
    int64_t value = 0;
    CHECK_RC(roost_counter_add(engine, TEXT("a"), TEXT("a-counter-name-too-long"), 1, &value),
             ROOST_TOO_LARGE);
    roost_bytes out = {0};
    memset(big, ' ', sizeof big);
    memcpy(big, "{\"sql\": \"SELECT 1\"}", 19);
    CHECK_RC(roost_sql(engine, TEXT("a"), big, sizeof big, &out), ROOST_TOO_LARGE);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_invalid_config_json(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    const char *bad[] = {
        "",
        "{",
        "[]",
        "{\"durability\": \"sometimes\"}",
        "{\"unknown_key\": 1}",
        "{\"max_value_bytes\": \"lots\"}",
        "{\"max_value_byte\": 10}",
        "{\"flush_interval_ms\": -5}",
        "{\"data_dir\": \"\xff\xfe\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        roost_engine *engine = NULL;
        roost_result rc = roost_engine_open(bad[i], &engine);
        if (rc != ROOST_INVALID_CONFIG && rc != ROOST_INVALID_UTF8) {
            fprintf(stderr, "  config %s: got %s\n", bad[i], roost_result_name(rc));
            return 1;
        }
        CHECK(engine == NULL);
    }
    char config[512];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"max_value_bytes\": 10}", dir);
    roost_engine *engine = NULL;
    CHECK_RC(roost_engine_open(config, &engine), ROOST_OK);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_double_close_and_use_after_close(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "durable", &engine), ROOST_OK);
    int64_t value = 0;
    CHECK_RC(roost_counter_add(engine, TEXT("a"), TEXT("n"), 1, &value), ROOST_OK);
    roost_engine_close(engine);
    /* The handle is a token: closing twice, or using it after close, is detected. */
    roost_engine_close(engine);
    roost_engine_close(NULL);
    CHECK_RC(roost_counter_add(engine, TEXT("a"), TEXT("n"), 1, &value), ROOST_CLOSED);
    roost_bytes out = {0};
    CHECK_RC(roost_kv_get(engine, TEXT("a"), TEXT("k"), &out), ROOST_CLOSED);
    CHECK(last_error_contains("closed"));

    roost_engine *again = NULL;
    CHECK_RC(open_engine(dir, "durable", &again), ROOST_OK);
    CHECK(again != engine);
    CHECK_RC(roost_counter_add(engine, TEXT("a"), TEXT("n"), 1, &value), ROOST_CLOSED);
    CHECK_RC(roost_counter_add(again, TEXT("a"), TEXT("n"), 1, &value), ROOST_OK);
    CHECK(value == 2);
    roost_engine_close(again);
    remove_dir(dir);
    return 0;
}

static int test_bytes_free_and_error_texts(void) {
    roost_bytes empty = {0};
    roost_bytes_free(empty);
    roost_bytes_release(NULL);
    roost_bytes_release(&empty);

    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "memory", &engine), ROOST_OK);
    CHECK_RC(roost_kv_put(engine, TEXT("a"), TEXT("k"), TEXT("value")), ROOST_OK);
    roost_bytes out = {0};
    CHECK_RC(roost_kv_get(engine, TEXT("a"), TEXT("k"), &out), ROOST_OK);
    roost_bytes_release(&out);
    CHECK(out.ptr == NULL && out.len == 0);
    roost_bytes_release(&out); /* a second release of the same struct is harmless */
    roost_engine_close(engine);
    remove_dir(dir);

    char small[5];
    size_t full = roost_error_message(ROOST_NOT_FOUND, small, sizeof small);
    CHECK(full == strlen("not found"));
    CHECK(strcmp(small, "not ") == 0);
    CHECK(roost_error_message(ROOST_OK, NULL, 0) == strlen("success"));
    char text[64];
    roost_error_message(12345, text, sizeof text);
    CHECK(strcmp(text, "unknown result code") == 0);
    CHECK(strcmp(roost_result_name(ROOST_TOO_LARGE), "ROOST_TOO_LARGE") == 0);
    CHECK(roost_result_name(12345) == NULL);

    int64_t value = 0;
    CHECK_RC(roost_counter_add(NULL, TEXT("a"), TEXT("n"), 1, &value), ROOST_NULL_POINTER);
    size_t needed = roost_last_error(NULL, 0);
    char *detail = malloc(needed + 1);
    CHECK(detail != NULL);
    CHECK(roost_last_error(detail, needed + 1) == needed);
    CHECK(strcmp(detail, "ROOST_NULL_POINTER: engine is NULL") == 0);
    free(detail);
    return 0;
}

/* ---- async submit/complete ---------------------------------------------- */

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int calls;
    int failures;
    int64_t value_sum;
    roost_result last_result;
    char last_data[256];
    roost_engine *engine; /* for the callback that tries a blocking call */
    roost_result nested_result;
} answers;

static void answers_init(answers *a) {
    memset(a, 0, sizeof *a);
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->changed, NULL);
}

static void answers_destroy(answers *a) {
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->changed);
}

/* Waits (at most 30 s) until `count` callbacks have arrived. */
static int answers_wait(answers *a, int count) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&a->lock);
    int timed_out = 0;
    while (a->calls < count && !timed_out) {
        timed_out = pthread_cond_timedwait(&a->changed, &a->lock, &deadline) != 0;
    }
    int arrived = a->calls;
    pthread_mutex_unlock(&a->lock);
    return arrived >= count;
}

static void on_complete(void *user_data, roost_result result, int64_t value, uint8_t *data,
                        size_t data_len) {
    answers *a = user_data;
    pthread_mutex_lock(&a->lock);
    a->calls++;
    a->value_sum += value;
    a->last_result = result;
    if (result != ROOST_OK) {
        a->failures++;
    }
    size_t n = data_len < sizeof a->last_data - 1 ? data_len : sizeof a->last_data - 1;
    if (n > 0) {
        memcpy(a->last_data, data, n);
    }
    a->last_data[n] = '\0';
    pthread_cond_broadcast(&a->changed);
    pthread_mutex_unlock(&a->lock);
    roost_bytes_free((roost_bytes){data, data_len});
}

static void on_complete_try_blocking(void *user_data, roost_result result, int64_t value,
                                     uint8_t *data, size_t data_len) {
    answers *a = user_data;
    int64_t nested = 0;
    a->nested_result = roost_counter_get(a->engine, TEXT("async"), TEXT("n"), &nested);
    on_complete(user_data, result, value, data, data_len);
}

static int test_async_submit_and_complete(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "durable", &engine), ROOST_OK);
    answers a;
    answers_init(&a);
    const int writes = 1000;
    for (int i = 0; i < writes; i++) {
        CHECK_RC(roost_counter_add_async(engine, TEXT("async"), TEXT("n"), 1, on_complete, &a),
                 ROOST_OK);
    }
    CHECK(answers_wait(&a, writes));
    CHECK(a.failures == 0);
    /* Each of the 1000 callbacks got a distinct new value: 1 + 2 + ... + 1000. */
    CHECK(a.value_sum == (int64_t)writes * (writes + 1) / 2);

    answers b;
    answers_init(&b);
    CHECK_RC(roost_kv_put_async(engine, TEXT("async"), TEXT("k"), TEXT("v1"), on_complete, &b),
             ROOST_OK);
    CHECK(answers_wait(&b, 1));
    CHECK(b.last_result == ROOST_OK && b.value_sum > 0);
    CHECK_RC(roost_kv_get_async(engine, TEXT("async"), TEXT("k"), on_complete, &b), ROOST_OK);
    CHECK(answers_wait(&b, 2));
    CHECK(b.last_result == ROOST_OK && strcmp(b.last_data, "v1") == 0);
    CHECK_RC(roost_kv_get_async(engine, TEXT("async"), TEXT("absent"), on_complete, &b),
             ROOST_OK);
    CHECK(answers_wait(&b, 3));
    CHECK(b.last_result == ROOST_NOT_FOUND && strlen(b.last_data) > 0);
    CHECK_RC(roost_sql_async(engine, TEXT("async"), TEXT("{\"sql\": \"SELECT 6 * 7\"}"),
                             on_complete, &b),
             ROOST_OK);
    CHECK(answers_wait(&b, 4));
    CHECK(b.last_result == ROOST_OK && strstr(b.last_data, "[[42]]") != NULL);
    CHECK_RC(roost_sql_async(engine, TEXT("async"), TEXT("{\"sql\": \"SELEKT\"}"), on_complete,
                             &b),
             ROOST_OK);
    CHECK(answers_wait(&b, 5));
    CHECK(b.last_result == ROOST_SQL_ERROR && strlen(b.last_data) > 0);
    CHECK_RC(roost_kv_delete_async(engine, TEXT("async"), TEXT("k"), on_complete, &b), ROOST_OK);
    CHECK(answers_wait(&b, 6));
    CHECK(b.last_result == ROOST_OK);
    CHECK_RC(roost_counter_get_async(engine, TEXT("async"), TEXT("n"), on_complete, &b),
             ROOST_OK);
    CHECK(answers_wait(&b, 7));
    CHECK_RC(roost_kv_list_async(engine, TEXT("async"), NULL, 0, on_complete, &b), ROOST_OK);
    CHECK(answers_wait(&b, 8));
    CHECK(b.last_result == ROOST_OK && strcmp(b.last_data, "{\"items\":[],\"cursor\":null}") == 0);

    /* Refused submissions return the error and never call back. */
    answers refused;
    answers_init(&refused);
    CHECK_RC(roost_counter_add_async(engine, TEXT(""), TEXT("n"), 1, on_complete, &refused),
             ROOST_INVALID_ACTOR_ID);
    CHECK_RC(roost_counter_add_async(engine, TEXT("a"), TEXT("n"), 1, NULL, &refused),
             ROOST_NULL_POINTER);
    CHECK_RC(roost_kv_put_async(engine, TEXT("a"), NULL, 5, TEXT("v"), on_complete, &refused),
             ROOST_NULL_POINTER);
    CHECK_RC(roost_counter_add_async(NULL, TEXT("a"), TEXT("n"), 1, on_complete, &refused),
             ROOST_NULL_POINTER);

    /* A blocking call inside a callback is refused instead of deadlocking. */
    answers nested;
    answers_init(&nested);
    nested.engine = engine;
    CHECK_RC(roost_counter_add_async(engine, TEXT("async"), TEXT("n"), 1,
                                     on_complete_try_blocking, &nested),
             ROOST_OK);
    CHECK(answers_wait(&nested, 1));
    CHECK(nested.nested_result == ROOST_WOULD_DEADLOCK);

    /* Closing lets queued operations finish: every callback has run when it returns. */
    answers queued;
    answers_init(&queued);
    for (int i = 0; i < 200; i++) {
        CHECK_RC(roost_counter_add_async(engine, TEXT("queued"), TEXT("n"), 1, on_complete,
                                         &queued),
                 ROOST_OK);
    }
    roost_engine_close(engine);
    CHECK(queued.calls == 200 && queued.failures == 0);
    CHECK_RC(roost_counter_add_async(engine, TEXT("a"), TEXT("n"), 1, on_complete, &refused),
             ROOST_CLOSED);
    CHECK(refused.calls == 0);

    answers_destroy(&a);
    answers_destroy(&b);
    answers_destroy(&refused);
    answers_destroy(&nested);
    answers_destroy(&queued);
    remove_dir(dir);
    return 0;
}

/* ---- threads ----------------------------------------------------------- */

typedef struct {
    roost_engine *engine;
    int failures;
} worker;

static void *add_from_thread(void *arg) {
    worker *w = arg;
    for (int i = 0; i < 100; i++) {
        int64_t value = 0;
        if (roost_counter_add(w->engine, TEXT("shared"), TEXT("n"), 1, &value) != ROOST_OK) {
            w->failures++;
        }
    }
    return NULL;
}

static int test_one_engine_many_threads(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "buffered", &engine), ROOST_OK);
    pthread_t threads[4];
    worker workers[4];
    for (int i = 0; i < 4; i++) {
        workers[i] = (worker){engine, 0};
        CHECK(pthread_create(&threads[i], NULL, add_from_thread, &workers[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        CHECK(workers[i].failures == 0);
    }
    int64_t value = 0;
    CHECK_RC(roost_counter_get(engine, TEXT("shared"), TEXT("n"), &value), ROOST_OK);
    CHECK(value == 400);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

/* ---- rate limiting ----------------------------------------------------- */

#define MINUTE_MS 60000

static void sleep_ms(uint64_t ms) {
    struct timespec pause = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&pause, &pause) != 0) {
    }
}

static int test_ratelimit_burst_denial_and_retry(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "memory", &engine), ROOST_OK);
    roost_ratelimit_decision d = {0};
    for (uint64_t spent = 1; spent <= 3; spent++) {
        CHECK_RC(roost_ratelimit(engine, TEXT("10.0.0.1"), 3, MINUTE_MS, 1, &d), ROOST_OK);
        CHECK(d.allowed);
        CHECK(d.remaining == 3 - spent);
        CHECK(d.retry_after_ms == 0);
    }
    /* A denial is a decision, not an error. */
    CHECK_RC(roost_ratelimit(engine, TEXT("10.0.0.1"), 3, MINUTE_MS, 1, &d), ROOST_OK);
    CHECK(!d.allowed);
    CHECK(d.remaining == 0);
    CHECK(d.retry_after_ms > 19000 && d.retry_after_ms <= 20000);
    CHECK(d.reset_ms > 59000 && d.reset_ms <= MINUTE_MS);
    /* Cost 0 only looks; another key has its own allowance. */
    CHECK_RC(roost_ratelimit(engine, TEXT("10.0.0.2"), 3, MINUTE_MS, 0, &d), ROOST_OK);
    CHECK(d.allowed && d.remaining == 3);
    CHECK_RC(roost_ratelimit(engine, TEXT("10.0.0.2"), 3, MINUTE_MS, 3, &d), ROOST_OK);
    CHECK(d.allowed && d.remaining == 0);

    /* Two per second: denied, then allowed once retry_after_ms has passed. */
    CHECK_RC(roost_ratelimit(engine, TEXT("fast"), 2, 1000, 2, &d), ROOST_OK);
    CHECK(d.allowed);
    CHECK_RC(roost_ratelimit(engine, TEXT("fast"), 2, 1000, 1, &d), ROOST_OK);
    CHECK(!d.allowed);
    CHECK(d.retry_after_ms >= 1 && d.retry_after_ms <= 500);
    sleep_ms(d.retry_after_ms);
    CHECK_RC(roost_ratelimit(engine, TEXT("fast"), 2, 1000, 1, &d), ROOST_OK);
    CHECK(d.allowed);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_ratelimit_survives_close_and_reopen(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "durable", &engine), ROOST_OK);
    roost_ratelimit_decision d = {0};
    CHECK_RC(roost_ratelimit(engine, TEXT("api-key-7"), 5, 3600000, 5, &d), ROOST_OK);
    CHECK(d.allowed && d.remaining == 0);
    roost_engine_close(engine);

    engine = NULL;
    CHECK_RC(open_engine(dir, "durable", &engine), ROOST_OK);
    CHECK_RC(roost_ratelimit(engine, TEXT("api-key-7"), 5, 3600000, 1, &d), ROOST_OK);
    CHECK(!d.allowed);
    CHECK(d.retry_after_ms > 700000);
    roost_engine_close(engine);
    remove_dir(dir);
    return 0;
}

static int test_ratelimit_misuse(void) {
    char *dir = make_dir();
    CHECK(dir != NULL);
    roost_engine *engine = NULL;
    CHECK_RC(open_engine(dir, "memory", &engine), ROOST_OK);
    roost_ratelimit_decision d = {true, 77, 77, 77};

    CHECK_RC(roost_ratelimit(NULL, TEXT("k"), 3, MINUTE_MS, 1, &d), ROOST_NULL_POINTER);
    CHECK(last_error_contains("engine is NULL"));
    CHECK_RC(roost_ratelimit(engine, NULL, 4, 3, MINUTE_MS, 1, &d), ROOST_NULL_POINTER);
    CHECK_RC(roost_ratelimit(engine, TEXT("k"), 3, MINUTE_MS, 1, NULL), ROOST_NULL_POINTER);
    CHECK(last_error_contains("out_decision"));
    /* NULL with a zero length is an empty key. */
    CHECK_RC(roost_ratelimit(engine, NULL, 0, 3, MINUTE_MS, 1, &d), ROOST_INVALID_REQUEST);
    CHECK_RC(roost_ratelimit(engine, (const uint8_t *)"\xff\xfe", 2, 3, MINUTE_MS, 1, &d),
             ROOST_INVALID_UTF8);
    CHECK_RC(roost_ratelimit(engine, TEXT("k"), 0, MINUTE_MS, 1, &d), ROOST_INVALID_REQUEST);
    CHECK(last_error_contains("limit"));
    CHECK_RC(roost_ratelimit(engine, TEXT("k"), 3, 0, 1, &d), ROOST_INVALID_REQUEST);
    CHECK_RC(roost_ratelimit(engine, TEXT("k"), 3, MINUTE_MS, 4, &d), ROOST_INVALID_REQUEST);
    CHECK(last_error_contains("cost 4"));
    CHECK_RC(roost_ratelimit(engine, TEXT("k"), UINT64_MAX, UINT64_MAX, UINT64_MAX, &d),
             ROOST_INVALID_REQUEST);
    char long_key[4096];
    memset(long_key, 'x', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    CHECK_RC(roost_ratelimit(engine, TEXT(long_key), 3, MINUTE_MS, 1, &d), ROOST_TOO_LARGE);
    /* Failures leave the out-param alone and spend nothing. */
    CHECK(d.allowed && d.remaining == 77 && d.reset_ms == 77 && d.retry_after_ms == 77);
    CHECK_RC(roost_ratelimit(engine, TEXT("k"), 3, MINUTE_MS, 0, &d), ROOST_OK);
    CHECK(d.remaining == 3);

    roost_engine_close(engine);
    CHECK_RC(roost_ratelimit(engine, TEXT("k"), 3, MINUTE_MS, 1, &d), ROOST_CLOSED);
    remove_dir(dir);
    return 0;
}

/* ---- runner ------------------------------------------------------------ */

typedef struct {
    const char *name;
    int (*run)(void);
} test_case;

static const test_case TESTS[] = {
    {"version_matches_cargo_toml", test_version_matches_cargo_toml},
    {"counter_kv_sql_list_and_delete", test_counter_kv_sql_list_and_delete},
    {"durable_data_survives_close_and_reopen", test_durable_data_survives_close_and_reopen},
    {"compare_and_set", test_compare_and_set},
    {"export_and_import", test_export_and_import},
    {"null_engine_and_null_pointers", test_null_engine_and_null_pointers},
    {"invalid_utf8_and_bad_ids", test_invalid_utf8_and_bad_ids},
    {"oversized_keys_and_values", test_oversized_keys_and_values},
    {"invalid_config_json", test_invalid_config_json},
    {"double_close_and_use_after_close", test_double_close_and_use_after_close},
    {"bytes_free_and_error_texts", test_bytes_free_and_error_texts},
    {"async_submit_and_complete", test_async_submit_and_complete},
    {"one_engine_many_threads", test_one_engine_many_threads},
    {"ratelimit_burst_denial_and_retry", test_ratelimit_burst_denial_and_retry},
    {"ratelimit_survives_close_and_reopen", test_ratelimit_survives_close_and_reopen},
    {"ratelimit_misuse", test_ratelimit_misuse},
};

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof TESTS / sizeof TESTS[0]; i++) {
        if (argc > 1 && strcmp(argv[1], TESTS[i].name) != 0) {
            continue;
        }
        if (TESTS[i].run() == 0) {
            passed++;
            printf("ok - %s\n", TESTS[i].name);
        } else {
            failed++;
            printf("not ok - %s\n", TESTS[i].name);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
