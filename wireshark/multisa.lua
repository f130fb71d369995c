-- multisa.lua: multisa's RFC 9611 view inside Wireshark (a post-dissector, Wireshark >= 4.0).
--
-- Install: copy this file into Wireshark's personal Lua plugins folder
-- (Linux/macOS: ~/.local/lib/wireshark/plugins/, Windows: %APPDATA%\Wireshark\plugins\;
-- Help > About Wireshark > Folders lists it), or load it once with
--   tshark -X lua_script:wireshark/multisa.lua -o multisa.findings:lint.json -r CAPTURE
--
-- What it adds, in a "multisa" tree on each frame it has something to say about:
--   * SA_RESOURCE_INFO (16444) and TS_MAX_QUEUE (48) by name (multisa.notify), read from
--     Wireshark's own (decrypted) isakmp notify fields; the resource identifier of an
--     SA_RESOURCE_INFO that carries data as multisa.resource_id (bytes);
--   * with the preference multisa.findings naming a `multisa lint --format json` file:
--     per finding on the frames it names, multisa.code, multisa.severity, multisa.rfc,
--     multisa.group (the Child SA group, TSi === TSr), multisa.message (and multisa.name,
--     multisa.category), plus an expert info item whose severity is the finding's
--     (error -> Error, warning -> Warning, info -> Note) and whose group is the rule's
--     Wireshark expert group (the JSON's "category": Protocol, Sequence, Security, ...);
--   * on ESP frames of the Child SAs the JSON's "esp_sas" lists: multisa.spi, multisa.role
--     (fallback/member), multisa.sa.group, multisa.sa.resource_id, multisa.sa.child_sa.
-- A findings file that is missing or unreadable gives one warning and the plugin carries on
-- with the notify decoding alone.

local PLUGIN_VERSION = "1.0"

if set_plugin_info then
    set_plugin_info({ version = PLUGIN_VERSION, author = "multisa",
                      description = "RFC 9611 per-resource Child SAs: multisa lint findings, SA_RESOURCE_INFO" })
end

local SA_RESOURCE_INFO, TS_MAX_QUEUE = 16444, 48
local NOTIFY_NAMES = { [SA_RESOURCE_INFO] = "SA_RESOURCE_INFO", [TS_MAX_QUEUE] = "TS_MAX_QUEUE" }

local multisa = Proto("multisa", "multisa RFC 9611 analysis")

-- ---------------------------------------------------------------------------------------
-- Fields

local F = {
    notify = ProtoField.string("multisa.notify", "Notify"),
    notify_type = ProtoField.uint16("multisa.notify_type", "Notify Message Type", base.DEC, NOTIFY_NAMES),
    resource_id = ProtoField.bytes("multisa.resource_id", "Resource Identifier"),
    notify_data = ProtoField.bytes("multisa.notify_data", "Notification Data"),
    code = ProtoField.string("multisa.code", "Code"),
    name = ProtoField.string("multisa.name", "Rule"),
    severity = ProtoField.string("multisa.severity", "Severity"),
    message = ProtoField.string("multisa.message", "Message"),
    rfc = ProtoField.string("multisa.rfc", "RFC"),
    level = ProtoField.string("multisa.level", "Requirement level"),
    group = ProtoField.string("multisa.group", "Child SA group"),
    category = ProtoField.string("multisa.category", "Expert group"),
    ike_spis = ProtoField.string("multisa.ike_spis", "IKE SA"),
    spi = ProtoField.uint32("multisa.spi", "ESP SPI", base.HEX),
    role = ProtoField.string("multisa.role", "Role"),
    sa_group = ProtoField.string("multisa.sa.group", "Child SA group"),
    sa_resource_id = ProtoField.string("multisa.sa.resource_id", "Resource Identifier (hex)"),
    sa_child = ProtoField.string("multisa.sa.child_sa", "Child SA (in/out SPIs)"),
}
multisa.fields = F

-- Expert items: one per (severity, expert group), as the rule registry's ExpertGroup names them
local SEVERITIES = { error = expert.severity.ERROR, warning = expert.severity.WARN, info = expert.severity.NOTE }
local GROUPS = {
    ["Protocol"] = expert.group.PROTOCOL, ["Sequence"] = expert.group.SEQUENCE,
    ["Security"] = expert.group.SECURITY, ["Response code"] = expert.group.RESPONSE_CODE,
    ["Malformed"] = expert.group.MALFORMED, ["Decryption"] = expert.group.DECRYPTION,
    ["Checksum"] = expert.group.CHECKSUM,
}
local EXPERTS, expert_list = {}, {}
for sev_name, sev in pairs(SEVERITIES) do
    for group_name, group in pairs(GROUPS) do
        local abbrev = "multisa.finding." .. sev_name .. "." .. group_name:lower():gsub(" ", "_")
        local e = ProtoExpert.new(abbrev, "multisa finding", group, sev)
        EXPERTS[sev_name .. "/" .. group_name] = e
        expert_list[#expert_list + 1] = e
    end
end
local warning_expert = ProtoExpert.new("multisa.findings_file", "multisa findings file problem",
                                       expert.group.PROTOCOL, expert.severity.WARN)
expert_list[#expert_list + 1] = warning_expert
multisa.experts = expert_list

multisa.prefs.findings = Pref.string("Findings file", "",
    "`multisa lint CAPTURE -k KEYS --format json -o FILE` output for this capture")

-- Wireshark's own fields (the isakmp dissector decrypts with its IKEv2 decryption table)
local notify_type_f = Field.new("isakmp.notify.msgtype")
local notify_data_f = Field.new("isakmp.notify.data")
local esp_spi_f = Field.new("esp.spi")
local ip_dst_f = Field.new("ip.dst")
local ipv6_dst_f = Field.new("ipv6.dst")

-- ---------------------------------------------------------------------------------------
-- A small JSON reader (lint's output is plain JSON; Wireshark 4.0's Lua has none)

local json = {}

local function json_error(s, i, what)
    local line = 1
    for _ in s:sub(1, i):gmatch("\n") do line = line + 1 end
    error({ json = true, msg = what .. " at line " .. line }, 0)
end

local function skip(s, i)
    return s:find("[^ \t\r\n]", i) or #s + 1
end

local function utf8_char(cp)
    if cp < 0x80 then return string.char(cp) end
    if cp < 0x800 then return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40) end
    if cp < 0x10000 then
        return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
    end
    return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
                       0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local ESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local parse_value

local function parse_string(s, i)  -- s:sub(i, i) == '"'
    local out, j = {}, i + 1
    while true do
        local k = s:find('["\\]', j)
        if not k then json_error(s, i, "unterminated string") end
        out[#out + 1] = s:sub(j, k - 1)
        if s:sub(k, k) == '"' then return table.concat(out), k + 1 end
        local c = s:sub(k + 1, k + 1)
        if c == "u" then
            local hex = s:sub(k + 2, k + 5)
            if not hex:match("^%x%x%x%x$") then json_error(s, k, "bad \\u escape") end
            local cp, nxt = tonumber(hex, 16), k + 6
            if cp >= 0xD800 and cp <= 0xDBFF and s:sub(nxt, nxt + 1) == "\\u" then
                local lo = tonumber(s:sub(nxt + 2, nxt + 5), 16)
                if lo and lo >= 0xDC00 and lo <= 0xDFFF then
                    cp, nxt = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00), nxt + 6
                end
            end
            out[#out + 1] = utf8_char(cp)
            j = nxt
        elseif ESCAPES[c] then
            out[#out + 1] = ESCAPES[c]
            j = k + 2
        else
            json_error(s, k, "bad escape")
        end
    end
end

parse_value = function(s, i)
    i = skip(s, i)
    local c = s:sub(i, i)
    if c == "{" then
        local obj = {}
        i = skip(s, i + 1)
        if s:sub(i, i) == "}" then return obj, i + 1 end
        while true do
            if s:sub(i, i) ~= '"' then json_error(s, i, "expected a key") end
            local key
            key, i = parse_string(s, i)
            i = skip(s, i)
            if s:sub(i, i) ~= ":" then json_error(s, i, "expected ':'") end
            obj[key], i = parse_value(s, i + 1)
            i = skip(s, i)
            local d = s:sub(i, i)
            if d == "}" then return obj, i + 1 end
            if d ~= "," then json_error(s, i, "expected ',' or '}'") end
            i = skip(s, i + 1)
        end
    elseif c == "[" then
        local arr = {}
        i = skip(s, i + 1)
        if s:sub(i, i) == "]" then return arr, i + 1 end
        while true do
            arr[#arr + 1], i = parse_value(s, i)
            i = skip(s, i)
            local d = s:sub(i, i)
            if d == "]" then return arr, i + 1 end
            if d ~= "," then json_error(s, i, "expected ',' or ']'") end
            i = i + 1
        end
    elseif c == '"' then
        return parse_string(s, i)
    elseif s:sub(i, i + 3) == "true" then
        return true, i + 4
    elseif s:sub(i, i + 4) == "false" then
        return false, i + 5
    elseif s:sub(i, i + 3) == "null" then
        return nil, i + 4
    end
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if num and #num > 0 and tonumber(num) then return tonumber(num), i + #num end
    json_error(s, i, "unexpected " .. (c == "" and "end of file" or ("'" .. c .. "'")))
end

function json.decode(s)
    local value, i = parse_value(s, 1)
    if skip(s, i) <= #s then json_error(s, i, "trailing data") end
    return value
end

-- ---------------------------------------------------------------------------------------
-- The findings file

local by_frame = {}   -- frame number -> list of findings
local by_spi = {}     -- spi (number) -> list of esp_sas entries
local loaded_path = nil
local warned = {}     -- path -> true: one warning per findings file setting

local function warn_once(path, text)
    if warned[path] then return end
    warned[path] = true
    report_failure("multisa: " .. text)
end

local function check_doc(doc)
    if type(doc) ~= "table" or type(doc.findings) ~= "table" then
        return "not a multisa lint JSON document (no \"findings\" list; use --format json)"
    end
    for _, f in ipairs(doc.findings) do
        if type(f) ~= "table" or type(f.code) ~= "string" or type(f.frames) ~= "table" then
            return "a finding without \"code\" or \"frames\""
        end
    end
    return nil
end

local function load_findings(path)
    by_frame, by_spi = {}, {}
    if path == nil or path == "" then return end
    local fh, err = io.open(path, "rb")
    if not fh then
        warn_once(path, "cannot read the findings file " .. path .. ": " .. tostring(err))
        return
    end
    local text = fh:read("*a")
    fh:close()
    local ok, doc = pcall(json.decode, text or "")
    if not ok then
        local msg = type(doc) == "table" and doc.json and doc.msg or tostring(doc)
        warn_once(path, path .. " is not valid JSON (" .. msg .. ")")
        return
    end
    local problem = check_doc(doc)
    if problem then
        warn_once(path, path .. ": " .. problem)
        return
    end
    -- one capture per findings file: with several, show the first one's
    local files, first = {}, nil
    local captures = type(doc.summary) == "table" and doc.summary.captures or {}
    for _, c in ipairs(type(captures) == "table" and captures or {}) do
        if type(c) == "table" and c.file and not files[c.file] then
            files[c.file] = true
            first = first or c.file
        end
    end
    local n = 0
    for _ in pairs(files) do n = n + 1 end
    if n > 1 then
        warn_once(path, path .. " holds findings of " .. n .. " captures; showing those of " .. first ..
                  " (run lint on one capture per findings file)")
    end
    for _, f in ipairs(doc.findings) do
        if first == nil or f.file == nil or f.file == first then
            local seen = {}
            for _, frame in ipairs(f.frames) do
                if type(frame) == "number" and not seen[frame] then
                    seen[frame] = true
                    local list = by_frame[frame]
                    if not list then list = {}; by_frame[frame] = list end
                    list[#list + 1] = f
                end
            end
        end
    end
    for _, sa in ipairs(type(doc.esp_sas) == "table" and doc.esp_sas or {}) do
        if type(sa) == "table" and type(sa.spi) == "string" and (first == nil or sa.file == nil or sa.file == first) then
            local spi = tonumber(sa.spi, 16)
            if spi then
                local list = by_spi[spi]
                if not list then list = {}; by_spi[spi] = list end
                list[#list + 1] = sa
            end
        end
    end
end

local function ensure_loaded()
    local path = multisa.prefs.findings or ""
    if path ~= loaded_path then
        loaded_path = path
        load_findings(path)
    end
end

function multisa.init()
    ensure_loaded()
end

function multisa.prefs_changed()
    ensure_loaded()
end

-- ---------------------------------------------------------------------------------------
-- Dissection

local function notify_items(tree)
    local types = { notify_type_f() }
    if #types == 0 then return end
    local datas = { notify_data_f() }
    for _, t in ipairs(types) do
        local kind = t.value
        local name = NOTIFY_NAMES[kind]
        if name then
            -- the notify's data: the isakmp.notify.data item right after the type and SPI
            -- (RFC 7296 §3.10: Protocol ID, SPI Size, type, SPI, data), in the same buffer
            local src = t.source
            local spi_size = 0
            if src and t.offset >= 1 then spi_size = src:range(t.offset - 1, 1):uint() end
            local data
            for _, d in ipairs(datas) do
                if d.offset == t.offset + 2 + spi_size and tostring(d.source) == tostring(src) then
                    data = d
                    break
                end
            end
            local len = data and data.len or 0
            local label = name .. " (" .. kind .. ")"
            if kind == SA_RESOURCE_INFO then
                label = label .. (len > 0 and (", resource id " .. tostring(data.range:bytes()):lower())
                                  or ", no resource id (the fallback SA)")
            elseif len > 0 then
                label = label .. ", " .. len .. " octets of data (RFC 9611 §5.2: none)"
            end
            local sub = tree:add(multisa, t.range, "Notify: " .. label)
            sub:add(F.notify, t.range, name)
            sub:add(F.notify_type, t.range)
            if len > 0 then
                sub:add(kind == SA_RESOURCE_INFO and F.resource_id or F.notify_data, data.range)
            end
        end
    end
end

local function frame_dsts()
    local dsts = {}
    for _, fi in ipairs({ ip_dst_f() }) do dsts[tostring(fi.value)] = true end
    for _, fi in ipairs({ ipv6_dst_f() }) do dsts[tostring(fi.value)] = true end
    return dsts
end

local function esp_items(tree, pinfo)
    local spis = { esp_spi_f() }
    if #spis == 0 or next(by_spi) == nil then return end
    local dsts = nil
    for _, s in ipairs(spis) do
        local list = by_spi[s.value]
        if list then
            local sa = list[1]
            if #list > 1 then  -- the same SPI towards two peers: the frame's destination decides
                dsts = dsts or frame_dsts()
                for _, cand in ipairs(list) do
                    if cand.dst and dsts[cand.dst] then sa = cand; break end
                end
            end
            local sub = tree:add(multisa, s.range, "Child SA " .. (sa.child_sa or sa.spi) .. ": " ..
                                 tostring(sa.role) .. " of " .. tostring(sa.group))
            sub:add(F.spi, s.range)
            sub:add(F.role, s.range, tostring(sa.role))
            if sa.group then sub:add(F.sa_group, s.range, sa.group) end
            if sa.resource_id then sub:add(F.sa_resource_id, s.range, sa.resource_id) end
            if sa.child_sa then sub:add(F.sa_child, s.range, sa.child_sa) end
            if sa.ike_spis then sub:add(F.ike_spis, s.range, sa.ike_spis) end
        end
    end
end

local function finding_items(tree, tvb, pinfo)
    local list = by_frame[pinfo.number]
    if not list then return end
    local codes = {}
    for _, f in ipairs(list) do
        local sev = SEVERITIES[f.severity] and f.severity or "info"
        local cite = tostring(f.rfc or "") .. ((type(f.level) == "string" and f.level ~= "") and (" " .. f.level) or "")
        local text = f.code .. " " .. sev .. ": " .. tostring(f.message or "") .. (cite ~= "" and (" [" .. cite .. "]") or "")
        local range = tvb:len() > 0 and tvb:range(0, 0) or nil
        local sub = range and tree:add(multisa, range, text) or tree:add(multisa, text)
        sub:add(F.code, f.code)
        if f.name then sub:add(F.name, f.name) end
        sub:add(F.severity, sev)
        sub:add(F.message, tostring(f.message or ""))
        if f.rfc then sub:add(F.rfc, f.rfc) end
        if type(f.level) == "string" then sub:add(F.level, f.level) end
        if f.group then sub:add(F.group, f.group) end
        if f.category then sub:add(F.category, f.category) end
        if f.ike_spis then sub:add(F.ike_spis, f.ike_spis) end
        local e = EXPERTS[sev .. "/" .. tostring(f.category)] or EXPERTS[sev .. "/Protocol"]
        sub:add_proto_expert_info(e, "multisa " .. text)
        codes[#codes + 1] = f.code
    end
    pinfo.cols.info:append(" [multisa " .. table.concat(codes, ",") .. "]")
end

function multisa.dissector(tvb, pinfo, tree)
    ensure_loaded()
    local root = nil
    local function lazy_root()
        root = root or tree:add(multisa)
        return root
    end
    -- only build the tree when there is something to put in it
    local has_notify = false
    for _, t in ipairs({ notify_type_f() }) do
        if NOTIFY_NAMES[t.value] then has_notify = true; break end
    end
    if has_notify then notify_items(lazy_root()) end
    if by_frame[pinfo.number] then finding_items(lazy_root(), tvb, pinfo) end
    if next(by_spi) ~= nil then
        for _, s in ipairs({ esp_spi_f() }) do
            if by_spi[s.value] then esp_items(lazy_root(), pinfo); break end
        end
    end
end

register_postdissector(multisa)
