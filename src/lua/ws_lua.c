/* ws_lua.c: WebSocket messages as Lua values (the decoder for framing
 * "websocket") and luaserv.wscore, the handshake's hash. */
#include "lsv.h"
#include "decode.h"
#include "ws_lua.h"
#include "base64.h"
#include "conn.h"
#include "log.h"
#include "sha1.h"
#include "ws.h"

#include <lauxlib.h>
#include <string.h>

/* --- replies the decoder sends itself ------------------------------------ */

/* Queues one control frame with payload p[0, n) (n <= 125) on c: unmasked
 * as a server, masked with a fresh key as a client (spec->client). */
static void send_control(lsv_conn_t *c, const lsv_frame_spec_t *spec,
                         int opcode, const char *p, size_t n)
{
    char out[LSV_WS_HEAD_MAX + 125];
    uint8_t key[4] = { 0 };
    if (lsv_conn_is_closing(c)) return;
    if (spec->client) lsv_ws_mask_key(key);
    size_t hl = lsv_ws_put_head(out, opcode, n, spec->client ? key : NULL);
    if (spec->client) lsv_ws_unmask(out + hl, p, n, key);
    else memcpy(out + hl, p, n);
    lsv_conn_write(c, out, hl + n);
}

/* Ends c after a close frame was queued: the rest of the input is
 * dropped. In push mode (callback style) c closes once the frame is
 * written. In pull mode (stream style) the input ends, so the task's next
 * read gives nil, "closed", and c closes when the task returns: closing
 * it here would wake the reading task twice (stream.c's closing hook and
 * the read it is completing). */
static void finish(lsv_conn_t *c, const char *reason)
{
    lsv_conn_end_input(c);
    if (lsv_conn_type(c)->frame != NULL) lsv_conn_close(c, reason);
}

/* Answers a fault the framer cannot see (bad UTF-8: 1007; a bad close
 * code: 1002) with a close frame, drops the rest of the input and closes
 * c once the frame is written. */
static void fail(lsv_conn_t *c, const lsv_frame_spec_t *spec, unsigned code,
                 const char *why)
{
    char body[2] = { (char)(code >> 8), (char)(code & 0xff) };
    lsv_conn_log(LSV_LOG_INFO, c, "%s (websocket framing); closing", why);
    send_control(c, spec, LSV_WS_CLOSE, body, 2);
    finish(c, "protocol error");
}

/* What a control frame asks. */
enum { CTL_DONE, CTL_CLOSE, CTL_FAILED };

/* Handles one control frame, its payload unmasked into pl[0, h->len):
 * a ping gets its pong, a pong nothing, a close its echo (the code it
 * carries) and then c closes. CTL_CLOSE leaves *code (-1 for none). */
static int control(lsv_conn_t *c, const lsv_frame_spec_t *spec,
                   const lsv_ws_head_t *h, const char *pl, int *code)
{
    size_t n = (size_t)h->len;
    if (h->opcode == LSV_WS_PING) {
        send_control(c, spec, LSV_WS_PONG, pl, n);
        return CTL_DONE;
    }
    if (h->opcode == LSV_WS_PONG) return CTL_DONE;
    *code = -1;
    if (n >= 2) {
        *code = (unsigned char)pl[0] << 8 | (unsigned char)pl[1];
        if (!lsv_ws_close_code_valid((unsigned)*code)) {
            fail(c, spec, 1002, "websocket close with an invalid code");
            return CTL_FAILED;
        }
        if (!lsv_ws_utf8_valid(pl + 2, n - 2)) {
            fail(c, spec, 1007, "websocket close reason not UTF-8");
            return CTL_FAILED;
        }
    }
    send_control(c, spec, LSV_WS_CLOSE, pl, n >= 2 ? 2 : 0);
    finish(c, "closed");
    return CTL_CLOSE;
}

/* Pushes (reason, "close", code|nil) from the close payload pl[0, n). */
static int push_close(lua_State *L, const char *pl, size_t n, int code)
{
    if (n >= 2) lua_pushlstring(L, pl + 2, n - 2);
    else lua_pushliteral(L, "");
    lua_pushliteral(L, "close");
    if (code >= 0) lua_pushinteger(L, code);
    else lua_pushnil(L);
    return 3;
}

/* The data payload of the message p[0, n): every data frame's length;
 * SIZE_MAX when the frames do not tile p[0, n) exactly, which the framer
 * rules out unless it was handed another framing's stale hint: the walk
 * below then stays inside the frame all the same. */
static size_t data_total(const char *p, size_t n)
{
    size_t at = 0, total = 0;
    while (at < n) {
        lsv_ws_head_t h;
        size_t hl = lsv_ws_head(p + at, n - at, &h);
        if (unlikely(hl == 0 || h.len > n - at - hl)) return SIZE_MAX;
        if (h.opcode < LSV_WS_CLOSE) total += (size_t)h.len;
        at += hl + (size_t)h.len;
    }
    return total;
}

/* The frame p[0, n) is what lsv_ws_frame returned, so every header in it
 * is whole and valid and the walk needs no checks. A message is unmasked
 * straight into a Lua buffer of its final size; the control frames
 * between its fragments are answered in order as the walk meets them
 * (the pings lsv_ws_interim answered while the message was partial now
 * read as pongs and are skipped). A close between fragments ends the
 * frame: the partial message is dropped and the close pushed.
 * may raise (memory) */
/* A small unfragmented message, the common case: unmasked on the C stack
 * and pushed, with no buffer box and no second walk. */
#define SMALL_MESSAGE 1024

/* See decode.h. A single unfragmented text or binary frame of at most
 * SMALL_MESSAGE bytes, valid UTF-8 if text, is unmasked on the C stack and
 * pushed as one string with its kind. lua_checkstack does not raise. */
int lsv_ws_push_small(lua_State *L, const char *p, size_t n)
{
    lsv_ws_head_t h;
    size_t hl = lsv_ws_head(p, n, &h);
    if (unlikely(!(hl > 0 && h.fin && h.opcode < LSV_WS_CLOSE &&
                   h.len <= SMALL_MESSAGE && h.len == n - hl)))
        return -1;
    char small[SMALL_MESSAGE];
    size_t len = (size_t)h.len;
    lsv_ws_unmask(small, p + hl, len, h.mask);
    if (h.opcode == LSV_WS_TEXT && unlikely(!lsv_ws_utf8_valid(small, len)))
        return -1;                      /* lsv_ws_push fails the conn */
    if (unlikely(!lua_checkstack(L, 2))) return -1;
    lua_pushlstring(L, small, len);
    if (h.opcode == LSV_WS_TEXT) lua_pushliteral(L, "text");
    else lua_pushliteral(L, "binary");
    return 2;
}


int lsv_ws_push(lua_State *L, lsv_conn_t *c, const lsv_frame_spec_t *spec,
                const char *p, size_t n)
{
    if (lsv_ws_push_small(L, p, n) == 2) return 2;
    size_t total = data_total(p, n), got = 0, at = 0;
    if (unlikely(total == SIZE_MAX)) {
        fail(c, spec, 1002, "websocket frames out of step");
        return 0;
    }
    int base = lua_gettop(L);
    luaL_Buffer b;
    char *dst = luaL_buffinitsize(L, &b, total);
    int opcode = -1;
    while (at < n) {
        lsv_ws_head_t h;
        size_t hl = lsv_ws_head(p + at, n - at, &h);
        const char *pl = p + at + hl;
        size_t len = (size_t)h.len;
        at += hl + len;
        if (h.opcode < LSV_WS_CLOSE) {
            if (opcode < 0) opcode = h.opcode;
            lsv_ws_unmask(dst + got, pl, len, h.mask);
            got += len;
            continue;
        }
        char ctl[125];
        int code;
        lsv_ws_unmask(ctl, pl, len, h.mask);
        int r = control(c, spec, &h, ctl, &code);
        if (r == CTL_DONE) continue;
        lua_settop(L, base);
        return r == CTL_CLOSE ? push_close(L, ctl, len, code) : 0;
    }
    if (opcode < 0) {           /* a lone control frame, answered */
        lua_settop(L, base);
        return 0;
    }
    if (opcode == LSV_WS_TEXT && !lsv_ws_utf8_valid(dst, total)) {
        lua_settop(L, base);
        fail(c, spec, 1007, "websocket text not UTF-8");
        return 0;
    }
    luaL_pushresultsize(&b, total);
    if (opcode == LSV_WS_TEXT) lua_pushliteral(L, "text");
    else lua_pushliteral(L, "binary");
    return 2;
}

/* --- luaserv.wscore --------------------------------------------------------- */

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* wscore.accept(key) -> the Sec-WebSocket-Accept value for key:
 * base64(SHA-1(key .. GUID)). [-1, +1, e] */
static int wscore_accept(lua_State *L)
{
    size_t n;
    const char *key = luaL_checklstring(L, 1, &n);
    char buf[128];
    luaL_argcheck(L, n <= sizeof buf - sizeof WS_GUID, 1, "key too long");
    memcpy(buf, key, n);
    memcpy(buf + n, WS_GUID, sizeof WS_GUID - 1);
    unsigned char d[LSV_SHA1_LEN];
    lsv_sha1(buf, n + sizeof WS_GUID - 1, d);
    char out[LSV_BASE64_LEN(LSV_SHA1_LEN)];
    lua_pushlstring(L, out, lsv_base64_encode(d, sizeof d, out));
    return 1;
}

/* wscore.sha1(s) -> the 20-byte digest. [-1, +1, e] */
static int wscore_sha1(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char d[LSV_SHA1_LEN];
    lsv_sha1(s, n, d);
    lua_pushlstring(L, (const char *)d, sizeof d);
    return 1;
}

/* wscore.base64(s) -> s in base64. [-1, +1, e] */
static int wscore_base64(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, n <= (size_t)64 * 1024 * 1024, 1, "string too long");
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, LSV_BASE64_LEN(n));
    luaL_pushresultsize(&b, lsv_base64_encode(s, n, out));
    return 1;
}

int luaopen_luaserv_wscore(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "accept", wscore_accept },
        { "sha1", wscore_sha1 },
        { "base64", wscore_base64 },
        { NULL, NULL }
    };
    luaL_newlib(L, funcs);
    return 1;
}
