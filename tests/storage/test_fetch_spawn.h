/* Test helpers: start the local servers of the storage tests as child processes that
 * die with the test (PR_SET_PDEATHSIG), read the port they print, stop them. */
#ifndef TEST_FETCH_SPAWN_H
#define TEST_FETCH_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

/* Runs argv (argv[0] is a path) with stdin a pipe kept open by the parent and stdout a
 * pipe; when want_port, waits up to 20 s for the first line and parses it as the port.
 * Returns the pid (> 0) or -1. */
pid_t bdt_spawn(char *const argv[], int want_port, int *port);

/* Sends sig, waits up to 5 s, then SIGKILL and reaps. */
void bdt_stop(pid_t pid, int sig);

/* A currently free TCP port on 127.0.0.1. */
int bdt_free_port(void);

/* mkdtemp under /tmp; caller frees the string. bdt_rmrf removes it. */
char *bdt_tmpdir(const char *tag);
void bdt_rmrf(const char *dir);

/* Plain-socket HTTP/1.0 GET of 127.0.0.1:port/path into buf (NUL-terminated body);
 * returns the HTTP status or -1. Independent of the code under test. */
int bdt_http_get(int port, const char *path, char *buf, size_t cap);

/* Sends one raw request to 127.0.0.1:port and reads the reply line; 0 on success. */
int bdt_tcp_roundtrip(int port, const char *req, char *reply, size_t cap, int timeout_ms);

/* Path of a file under the source tree (BD_SOURCE_DIR). Static buffer. */
const char *bdt_src(const char *rel);

/* Integer value of "field": N in a flat JSON text, or -1. */
long bdt_json_int(const char *json, const char *field);

double bdt_now(void);

#endif
