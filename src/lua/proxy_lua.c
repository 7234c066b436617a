/* proxy_lua.c: conn.proxy, the PROXY header a conn came with, in Lua. */
#include "lsv.h"
#include "proxy_lua.h"
#include "vm.h"
#include "net.h"

#include <lauxlib.h>
#include <string.h>

/* Registry key of the weak-keyed table of conns' conn.proxy tables: made
 * on the first conn.proxy, so conns whose handler never asks cost
 * nothing. */
static const char cache_key = 'p';

/* Sets t[name] = v[0, n) on the table at the top. [-0, +0, m] */
static void set_bytes(lua_State *L, const char *name, const char *v,
                      size_t n)
{
    lua_pushlstring(L, v, n);
    lua_setfield(L, -2, name);
}

static uint32_t be32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 |
           (uint32_t)u[2] << 8 | u[3];
}

/* Pushes the SSL TLV's table: client and verify from its first 5 bytes,
 * then its sub-TLVs by name. [-0, +1, m] */
static void push_ssl(lua_State *L, const char *v, size_t n)
{
    static const struct { int type; const char *name; } subs[] = {
        { LSV_PP2_SUBTYPE_SSL_VERSION, "version" },
        { LSV_PP2_SUBTYPE_SSL_CN, "cn" },
        { LSV_PP2_SUBTYPE_SSL_CIPHER, "cipher" },
        { LSV_PP2_SUBTYPE_SSL_SIG_ALG, "sig_alg" },
        { LSV_PP2_SUBTYPE_SSL_KEY_ALG, "key_alg" },
    };
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, (unsigned char)v[0]);
    lua_setfield(L, -2, "client");
    lua_pushinteger(L, (lua_Integer)be32(v + 1));
    lua_setfield(L, -2, "verify");
    size_t off = 0, sn;
    int type;
    const char *sv;
    while (lsv_proxy_next_tlv(v + 5, n - 5, &off, &type, &sv, &sn) == 1)
        for (size_t i = 0; i < sizeof subs / sizeof *subs; i++)
            if (subs[i].type == type) set_bytes(L, subs[i].name, sv, sn);
}

/* Pushes tlvs: every TLV's raw bytes by its type, and the ones the
 * protocol defines by name too. [-0, +1, m] */
static void push_tlvs(lua_State *L, const lsv_proxy_info_t *p)
{
    static const struct { int type; const char *name; } named[] = {
        { LSV_PP2_TYPE_ALPN, "alpn" },
        { LSV_PP2_TYPE_AUTHORITY, "authority" },
        { LSV_PP2_TYPE_UNIQUE_ID, "unique_id" },
        { LSV_PP2_TYPE_NETNS, "netns" },
    };
    lua_newtable(L);
    size_t off = 0, n;
    int type;
    const char *v;
    while (lsv_proxy_next_tlv(p->tlv, p->hdr.tlv_len, &off, &type, &v,
                              &n) == 1) {
        lua_pushlstring(L, v, n);
        lua_rawseti(L, -2, type);
        for (size_t i = 0; i < sizeof named / sizeof *named; i++)
            if (named[i].type == type) set_bytes(L, named[i].name, v, n);
        if (type == LSV_PP2_TYPE_SSL && n >= 5) {
            push_ssl(L, v, n);
            lua_setfield(L, -2, "ssl");
        }
    }
}

/* Sets t[name] to the address sa formats to. [-0, +0, m] */
static void set_addr(lua_State *L, const char *name,
                     const struct sockaddr_storage *sa, socklen_t len)
{
    char buf[LSV_ADDRSTRLEN];
    lua_pushstring(L, lsv_net_format((const struct sockaddr *)sa, len, buf));
    lua_setfield(L, -2, name);
}

/* Pushes a new conn.proxy table for p. [-0, +1, m] */
static void push_new(lua_State *L, const lsv_proxy_info_t *p)
{
    const lsv_proxy_hdr_t *h = &p->hdr;
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, h->version);
    lua_setfield(L, -2, "version");
    lua_pushstring(L, !h->local ? "proxy"
                      : h->version == 1 ? "unknown" : "local");
    lua_setfield(L, -2, "command");
    if (!h->local) {
        set_addr(L, "src", &h->src, h->src_len);
        set_addr(L, "dst", &h->dst, h->dst_len);
    }
    if (h->dgram) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "dgram");
    }
    set_addr(L, "socket_peer", &p->socket_peer, p->socket_peer_len);
    push_tlvs(L, p);
    lua_setfield(L, -2, "tlvs");
}

/* lsv_vm_memo's maker: conn.proxy for the header ud. */
static int make_proxy(lua_State *L, const void *ud)
{
    push_new(L, ud);
    return 1;
}

void lsv_proxy_push(lua_State *L, int idx, const lsv_proxy_info_t *p)
{
    if (p == NULL) {
        lua_pushnil(L);
        return;
    }
    lsv_vm_memo(L, &cache_key, idx, make_proxy, p);
}
