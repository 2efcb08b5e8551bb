/*
 * A tour of the roost C ABI: open an engine, use one actor's counter, KV
 * and SQL, rate-limit a client, then close. Build (from the repository root, after
 * `cargo build --release`):
 *
 *   cc -std=c11 -Wall -Wextra -Iinclude bindings/c/example.c \
 *      -Ltarget/release -lroost -Wl,-rpath,"$PWD/target/release" -o example
 *   ./example [data-dir]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "roost.h"

/* A NUL-terminated string as the (pointer, length) pair roost takes. */
#define TEXT(s) (const uint8_t *)(s), strlen(s)

/* Prints the failure's detail and exits; every roost call returns a code. */
static void check(roost_result rc, const char *what) {
    if (rc == ROOST_OK) {
        return;
    }
    char detail[512];
    roost_last_error(detail, sizeof detail);
    fprintf(stderr, "%s failed: %s (%s)\n", what, roost_result_name(rc), detail);
    exit(1);
}

int main(int argc, char **argv) {
    const char *data_dir = argc > 1 ? argv[1] : "./roost-example-data";
    char config[1024];
    snprintf(config, sizeof config, "{\"data_dir\": \"%s\", \"durability\": \"durable\"}",
             data_dir);

    printf("roost %s\n", roost_version());
    roost_engine *engine = NULL;
    check(roost_engine_open(config, &engine), "roost_engine_open");

    const char *room = "room-42";
    int64_t visits = 0;
    check(roost_counter_add(engine, TEXT(room), TEXT("visits"), 1, &visits), "counter_add");
    printf("visits: %lld\n", (long long)visits);

    check(roost_kv_put(engine, TEXT(room), TEXT("topic"), TEXT("durable objects in C")),
          "kv_put");
    roost_bytes topic = {0};
    check(roost_kv_get(engine, TEXT(room), TEXT("topic"), &topic), "kv_get");
    printf("topic: %.*s\n", (int)topic.len, (const char *)topic.ptr);
    roost_bytes_free(topic);

    const char *statements =
        "{\"statements\": ["
        "{\"sql\": \"CREATE TABLE IF NOT EXISTS messages (body TEXT)\"},"
        "{\"sql\": \"INSERT INTO messages (body) VALUES (?)\", \"params\": [\"hello\"]},"
        "{\"sql\": \"SELECT count(*) AS n FROM messages\"}"
        "]}";
    roost_bytes answer = {0};
    check(roost_sql(engine, TEXT(room), TEXT(statements), &answer), "sql");
    printf("sql: %.*s\n", (int)answer.len, (const char *)answer.ptr);
    roost_bytes_free(answer);

    roost_bytes missing = {0};
    roost_result rc = roost_kv_get(engine, TEXT(room), TEXT("no-such-key"), &missing);
    char message[64];
    roost_error_message(rc, message, sizeof message);
    printf("missing key: %s (%s)\n", roost_result_name(rc), message);

    /* Three requests per second per client: the fourth in a burst waits. */
    for (int i = 1; i <= 4; i++) {
        roost_ratelimit_decision decision;
        check(roost_ratelimit(engine, TEXT("client:203.0.113.7"), 3, 1000, 1, &decision),
              "ratelimit");
        if (decision.allowed) {
            printf("request %d: allowed, %llu left\n", i, (unsigned long long)decision.remaining);
        } else {
            printf("request %d: denied, retry in %llu ms\n", i,
                   (unsigned long long)decision.retry_after_ms);
        }
    }

    roost_engine_close(engine);
    return 0;
}
