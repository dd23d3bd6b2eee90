-- wrk script: GET /v1/items with X-API-Key set to a new made-up key on
-- every request: FLOOD_PREFIX (default kw_test_) + 32 random base62
-- characters + their CRC32 checksum as 6 base62 characters. Each passes
-- keyward's format check, so each costs a cache lookup and a store read:
-- what anyone can send without holding a key.
-- With FLOOD_SAMPLE=FILE, init writes five such keys to FILE (to check the
-- checksum against another implementation) before sending anything.
local bit = require("bit")
local prefix = os.getenv("FLOOD_PREFIX") or "kw_test_"
local alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local symbols = {}
for i = 1, 62 do symbols[i - 1] = alphabet:sub(i, i) end

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then
      c = bit.bxor(bit.rshift(c, 1), 0xEDB88320)
    else
      c = bit.rshift(c, 1)
    end
  end
  crc_table[i] = c
end

local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
  end
  c = bit.bnot(c)
  if c < 0 then c = c + 4294967296 end
  return c
end

local function base62_fixed(v, width)
  local out = {}
  for i = width, 1, -1 do
    out[i] = symbols[v % 62]
    v = math.floor(v / 62)
  end
  return table.concat(out)
end

local body = {}
local function made_up()
  for i = 1, 32 do body[i] = symbols[math.random(0, 61)] end
  local s = prefix .. table.concat(body)
  return s .. base62_fixed(crc32(s), 6)
end

local seed = 0
function setup(thread)
  seed = seed + 1
  thread:set("thread_seed", seed)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_seed or 0) * 7919)
  local sample = os.getenv("FLOOD_SAMPLE")
  if sample then
    local f = io.open(sample, "w")
    for _ = 1, 5 do f:write(made_up(), "\n") end
    f:close()
  end
end

request = function()
  return wrk.format("GET", "/v1/items", { ["X-API-Key"] = made_up() })
end
