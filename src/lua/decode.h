/* decode.h: a frame as Lua values. The simple framings give the frame as
 * one string; the protocol framings (RESP, HTTP, WebSocket: frame.h) give
 * what their bytes mean: a command's arguments, a reply, a request, a
 * message. Used by both styles: on_message's arguments, read_frame's
 * results. */
#ifndef LSV_DECODE_H
#define LSV_DECODE_H

#include "lsv.h"
#include "conn.h"
#include "frame.h"

#include <lua.h>

/* Pushes the values for the frame p[0, n) of spec's kind and returns how
 * many; 0 when the frame was handled here and the handler has nothing to
 * see (a WebSocket ping, answered on c). It allocates and may raise: run
 * it inside a protected call (lsv_decode_pcall). */
int lsv_decode_push(lua_State *L, lsv_conn_t *c, const lsv_frame_spec_t *spec,
                    const char *p, size_t n);

/* Like lsv_vm_pcall(L, nargs + k, nresults) where k values decoded from
 * the frame follow the nargs arguments, decoding inside the protected
 * call. When the frame decodes to nothing the function is not called and
 * no results are left (LUA_OK). */
int lsv_decode_pcall(lua_State *L, int nargs, lsv_conn_t *c,
                     const lsv_frame_spec_t *spec, const char *p, size_t n,
                     int nresults);

/* Per protocol (src/lua/resp_lua.c, http_lua.c, ws_lua.c): the frame's
 * values, as lsv_decode_push. */
int lsv_resp_push(lua_State *L, const lsv_frame_spec_t *spec, const char *p,
                  size_t n);
int lsv_http_push(lua_State *L, const lsv_frame_spec_t *spec, const char *p,
                  size_t n);
int lsv_ws_push(lua_State *L, lsv_conn_t *c, const lsv_frame_spec_t *spec,
                const char *p, size_t n);

/* The common WebSocket frame, one small valid data message, decoded
 * outside a protected call (its string is under LSV_VM_SMALL_STR, the
 * policy in vm.h): pushes its 2 values and returns 2, or returns -1,
 * pushing nothing, for any other frame (lsv_ws_push decodes it then). */
int lsv_ws_push_small(lua_State *L, const char *p, size_t n);

#endif
