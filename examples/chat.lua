-- examples/chat.lua: a line-based chat room, in the stream style.
--
--   build/luaserv -l 127.0.0.1:7000 examples/chat.lua
--
-- The first line a client sends is its nickname (asked again while it is
-- empty, malformed or taken). After that every line goes to everyone else
-- as "<nick> text"; "/who" lists who is here and "/quit" leaves. Joins and
-- leaves are announced. Lines from the server that are not chat start
-- with "* ". Input may end in LF or CRLF; output ends in CRLF.
--
-- A slow reader must not stall the room. In a task, conn:write() waits
-- while the target conn has more than the high-water mark (1 MiB) queued,
-- and a broadcast runs in the sender's task: one peer that stops reading
-- would freeze the sender, and through it the room. So a broadcast never
-- waits: before writing to a peer it checks conn:pending(), and a peer
-- with more than MAX_PENDING bytes still queued (on top of what the
-- kernel buffers already hold) is told why and disconnected. Dropping a
-- message for it instead would keep it connected but silently lose chat.
local MAX_LINE = 4096

local handler = {
    -- readline() takes its limit from the line framing: a longer line
    -- ends the client's input ("too long").
    framing = { "line", max = MAX_LINE },
}

local MAX_PENDING = 256 * 1024  -- well under the high-water mark, so a
                                -- write to a peer never waits
local MAX_NICK = 16

local members = {}              -- nick -> conn, for everyone who joined

-- Queues text for one peer without ever waiting; drops a peer that is
-- too far behind. Its own task sees readline() fail and announces it.
local function send(conn, text)
    if conn:is_closed() then return end
    if conn:pending() > MAX_PENDING then
        conn.state.why = "too slow to read"
        conn:write("* you are not reading; bye\r\n")
        conn:close()
        return
    end
    conn:write(text)
end

-- Sends text to every member except `from` (nil: to everyone). Nothing
-- here yields, so no other task can change `members` during the loop.
local function broadcast(from, text)
    for _, conn in pairs(members) do
        if conn ~= from then send(conn, text) end
    end
end

local function who()
    local nicks = {}
    for nick in pairs(members) do nicks[#nicks + 1] = nick end
    table.sort(nicks)
    return "* here: " .. table.concat(nicks, ", ") .. "\r\n"
end

-- Asks until the client gives a free, well-formed nickname. Returns it,
-- or nil when the client went away first.
local function ask_nick(conn)
    conn:write("* welcome! your nickname?\r\n")
    while true do
        local line = conn:readline()
        if not line then return nil end
        local nick = line:match("^%s*(.-)%s*$")
        if nick == "" or #nick > MAX_NICK or nick:find("[^%w_%-]") then
            conn:write("* a nickname is 1 to ", MAX_NICK,
                       " letters, digits, _ or -; try again\r\n")
        elseif members[nick] then
            conn:write("* ", nick, " is taken; try another\r\n")
        else
            return nick
        end
    end
end

function handler.handle(conn)
    local nick = ask_nick(conn)
    if not nick then return end
    members[nick] = conn
    conn:write("* hello ", nick, "; /who lists who is here, /quit leaves\r\n")
    broadcast(conn, "* " .. nick .. " joined\r\n")

    local why
    while true do
        local line, err = conn:readline()
        if err == "too long" then
            -- Input ends at a line over the framing max; writing still works.
            conn:write("* lines are at most ", MAX_LINE, " bytes; bye\r\n")
            why = "line too long"
            break
        elseif not line then
            -- "closed": the peer hung up, or send() dropped it (and left
            -- the reason in conn.state)
            why = conn.state.why
            break
        end
        if line == "/quit" then
            conn:write("* bye, ", nick, "\r\n")
            break
        elseif line == "/who" then
            conn:write(who())
        elseif line:sub(1, 1) == "/" then
            conn:write("* unknown command ", line, "; try /who or /quit\r\n")
        elseif line ~= "" then
            broadcast(conn, "<" .. nick .. "> " .. line .. "\r\n")
        end
    end

    members[nick] = nil
    broadcast(nil, "* " .. nick .. " left" ..
                   (why and " (" .. why .. ")" or "") .. "\r\n")
    -- Returning closes the connection once "bye" is written.
end

return handler
