#include "bd_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static volatile int g_level = BD_LOG_INFO;

int bd_log_parse_level(const char *s) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  if (!s) return -1;
  for (int i = 0; i < 4; i++)
    if (strcasecmp(s, names[i]) == 0) return i;
  if (strcasecmp(s, "warning") == 0) return BD_LOG_WARN;
  return -1;
}

void bd_log_set_level(bd_log_level lvl) { g_level = (int)lvl; }
bd_log_level bd_log_get_level(void) { return (bd_log_level)g_level; }

void bd_log(bd_log_level lvl, const char *fmt, ...) {
  static const char *const tags[] = {"ERROR", "WARN", "INFO", "DEBUG"};
  if ((int)lvl > g_level) return;
  char line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s\n", tm.tm_year + 1900, tm.tm_mon + 1,
          tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, tags[lvl], line);
}
