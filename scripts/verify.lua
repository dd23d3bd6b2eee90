-- wrk script: POST /v1/keys/verify, cycling through the keys in KEYS_FILE.
local keys = {}
local root = os.getenv("ROOT_KEY")
for line in io.lines(os.getenv("KEYS_FILE")) do
  if #line > 0 then keys[#keys + 1] = line end
end
local i = 0
local non2xx = 0

request = function()
  i = i % #keys + 1
  return wrk.format("POST", "/v1/keys/verify", {
    ["Authorization"] = "Bearer " .. root,
    ["Content-Type"] = "application/json",
  }, '{"key":"' .. keys[i] .. '"}')
end

response = function(status)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
