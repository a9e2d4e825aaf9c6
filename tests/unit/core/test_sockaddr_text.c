/* core/sockaddr_text: the text of IPv4/IPv6 socket addresses as logs, stats names and traces
 * show them (Envoy's stats form uses '_' before the port and keeps IPv6 brackets). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "core/sockaddr_text.h"

static void test_v4_and_v6(void **state)
{
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(10000)};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    char buf[SOCKADDR_TEXT_MAX], ip[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    (void)state;
    inet_pton(AF_INET, "127.0.0.1", &s4.sin_addr);
    inet_pton(AF_INET6, "::1", &s6.sin6_addr);
    sockaddr_text((struct sockaddr *)&s4, sizeof(s4), ':', buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.1:10000");
    sockaddr_text((struct sockaddr *)&s4, sizeof(s4), '_', buf, sizeof(buf));
    assert_string_equal(buf, "127.0.0.1_10000");
    sockaddr_text((struct sockaddr *)&s6, sizeof(s6), ':', buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:443");
    sockaddr_text((struct sockaddr *)&s6, sizeof(s6), '_', buf, sizeof(buf));
    assert_string_equal(buf, "[::1]_443");
    assert_int_equal(sockaddr_ip_port((struct sockaddr *)&s6, sizeof(s6), ip, sizeof(ip), &port),
                     0);
    assert_string_equal(ip, "::1");
    assert_int_equal(port, 443);
    /* the longest IPv6 text inet_ntop gives for a port address fits SOCKADDR_TEXT_MAX */
    inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &s6.sin6_addr);
    s6.sin6_port = htons(65535);
    sockaddr_text((struct sockaddr *)&s6, sizeof(s6), ':', buf, sizeof(buf));
    assert_string_equal(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}

static void test_other_families_and_short_lengths(void **state)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/run/x.sock"};
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    char buf[SOCKADDR_TEXT_MAX], ip[INET6_ADDRSTRLEN] = "junk";
    (void)state;
    assert_int_equal(sockaddr_ip_port((struct sockaddr *)&un, sizeof(un), ip, sizeof(ip), NULL),
                     -EAFNOSUPPORT);
    assert_string_equal(ip, "");
    sockaddr_text((struct sockaddr *)&un, sizeof(un), ':', buf, sizeof(buf));
    assert_string_equal(buf, "?");
    assert_int_equal(sockaddr_ip_port((struct sockaddr *)&s4, 4, ip, sizeof(ip), NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4_and_v6),
        cmocka_unit_test(test_other_families_and_short_lengths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
