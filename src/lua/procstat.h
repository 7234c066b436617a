/* procstat.h: the standard process_* metrics, read from /proc/self. */
#ifndef LSV_PROCSTAT_H
#define LSV_PROCSTAT_H

#include <lua.h>

/* core.process_metrics() -> process_cpu_seconds_total, process_open_fds,
 * process_max_fds, process_virtual_memory_bytes,
 * process_resident_memory_bytes, process_start_time_seconds (named and
 * measured as the Prometheus client libraries do) and
 * luaserv_build_info{version=...} 1, in the text format. A /proc field
 * that cannot be read leaves its family out. [-0, +1, m] */
int lsv_procstat_metrics(lua_State *L);

#endif
