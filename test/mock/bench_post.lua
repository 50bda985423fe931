-- wrk script: wrk -t1 -c64 -d5s -s test/mock/bench_post.lua http://127.0.0.1:PORT/
-- Posts a text message with a unique biz_opaque_callback_data per request.
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TESTTOKEN"
request = function()
  n = n + 1
  local body = '{"messaging_product":"whatsapp","recipient_type":"individual","to":"+5215512345678","type":"text","text":{"body":"hello from the benchmark"},"biz_opaque_callback_data":"' .. n .. '"}'
  return wrk.format("POST", "/v24.0/1234567890/messages", nil, body)
end
