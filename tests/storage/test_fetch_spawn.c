#define _GNU_SOURCE
#include "test_fetch_spawn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double bdt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

pid_t bdt_spawn(char *const argv[], int want_port, int *port) {
  int out[2], in[2];
  if (pipe(out) || pipe(in)) return -1;
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  fcntl(in[1], F_SETFD, FD_CLOEXEC); /* stays open: the child's stdin ends when we die */
  if (want_port) {
    char line[64];
    size_t n = 0;
    double t0 = bdt_now();
    while (n + 1 < sizeof line && bdt_now() - t0 < 20.0) {
      struct pollfd p = {out[0], POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      ssize_t k = read(out[0], line + n, 1);
      if (k <= 0) break;
      if (line[n] == '\n') break;
      n++;
    }
    line[n] = '\0';
    *port = atoi(line);
    if (*port <= 0) {
      bdt_stop(pid, SIGKILL);
      close(out[0]);
      return -1;
    }
  }
  /* Keep draining nothing: the servers print only the port. */
  close(out[0]);
  return pid;
}

void bdt_stop(pid_t pid, int sig) {
  if (pid <= 0) return;
  kill(pid, sig);
  for (int i = 0; i < 100; i++) {
    if (waitpid(pid, NULL, WNOHANG) == pid) return;
    usleep(50000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

int bdt_free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t l = sizeof a;
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) ||
      getsockname(s, (struct sockaddr *)&a, &l)) {
    if (s >= 0) close(s);
    return -1;
  }
  close(s);
  return ntohs(a.sin_port);
}

char *bdt_tmpdir(const char *tag) {
  char *d = malloc(256);
  snprintf(d, 256, "/tmp/bdtest-%s-XXXXXX", tag);
  if (!mkdtemp(d)) {
    free(d);
    return NULL;
  }
  return d;
}

void bdt_rmrf(const char *dir) {
  if (!dir || strncmp(dir, "/tmp/bdtest-", 12) != 0) return;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
}

static int connect_lo(int port, int timeout_ms) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return -1;
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, (struct sockaddr *)&a, sizeof a)) {
    close(s);
    return -1;
  }
  return s;
}

int bdt_tcp_roundtrip(int port, const char *req, char *reply, size_t cap, int timeout_ms) {
  int s = connect_lo(port, timeout_ms);
  if (s < 0) return -1;
  size_t n = strlen(req);
  if (write(s, req, n) != (ssize_t)n) {
    close(s);
    return -1;
  }
  ssize_t k = read(s, reply, cap - 1);
  close(s);
  if (k <= 0) return -1;
  reply[k] = '\0';
  return 0;
}

int bdt_http_get(int port, const char *path, char *buf, size_t cap) {
  int s = connect_lo(port, 5000);
  if (s < 0) return -1;
  char req[1024];
  snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
  if (write(s, req, strlen(req)) != (ssize_t)strlen(req)) {
    close(s);
    return -1;
  }
  size_t n = 0;
  ssize_t k;
  char *all = malloc(1 << 20);
  while (n < (1 << 20) - 1 && (k = read(s, all + n, (1 << 20) - 1 - n)) > 0) n += (size_t)k;
  close(s);
  all[n] = '\0';
  int code = -1;
  if (sscanf(all, "HTTP/%*s %d", &code) != 1) code = -1;
  char *body = strstr(all, "\r\n\r\n");
  buf[0] = '\0';
  if (body) snprintf(buf, cap, "%s", body + 4);
  free(all);
  return code;
}

const char *bdt_src(const char *rel) {
  static char p[1024];
  const char *root = getenv("BD_SOURCE_DIR");
  snprintf(p, sizeof p, "%s/%s", root ? root : ".", rel);
  return p;
}

long bdt_json_int(const char *json, const char *field) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"%s\": ", field);
  const char *p = strstr(json, pat);
  if (!p) {
    snprintf(pat, sizeof pat, "\"%s\":", field);
    p = strstr(json, pat);
  }
  if (!p) return -1;
  return strtol(p + strlen(pat), NULL, 10);
}
