-- wrk script: GET /v1/calls with X-API-Key, cycling through the keys in KEYS_FILE.
local keys = {}
for line in io.lines(os.getenv("KEYS_FILE")) do
  if #line > 0 then keys[#keys + 1] = line end
end
local i = 0
request = function()
  i = i % #keys + 1
  return wrk.format("GET", "/v1/calls", { ["X-API-Key"] = keys[i] })
end
