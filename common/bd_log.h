/* bd_log: levelled logging to stderr for processes (worker, coordinator, CLI).
 *
 * Libraries below the process layer (proto, storage, gpu) do not log: they return
 * bd_status with a message. The level is set once by main from --log-level or
 * BATCHDET_LOG. Thread safety: bd_log may be called from any thread; each line is
 * written with one fprintf so lines do not interleave. */
#ifndef BD_LOG_H
#define BD_LOG_H

typedef enum { BD_LOG_ERROR = 0, BD_LOG_WARN, BD_LOG_INFO, BD_LOG_DEBUG } bd_log_level;

/* Parses "error|warn|info|debug"; returns -1 when unknown. */
int bd_log_parse_level(const char *s);
void bd_log_set_level(bd_log_level lvl);
bd_log_level bd_log_get_level(void);
void bd_log(bd_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define BD_LOGE(...) bd_log(BD_LOG_ERROR, __VA_ARGS__)
#define BD_LOGW(...) bd_log(BD_LOG_WARN, __VA_ARGS__)
#define BD_LOGI(...) bd_log(BD_LOG_INFO, __VA_ARGS__)
#define BD_LOGD(...) bd_log(BD_LOG_DEBUG, __VA_ARGS__)

#endif
