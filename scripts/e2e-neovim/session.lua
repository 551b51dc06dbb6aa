-- A real Neovim (0.7+, headless) driving whence-ls over stdio through its built-in LSP client:
-- complete, accept, hover a generated token, wait for diagnostics, code lenses and code actions.
-- Writes what it saw to $WHENCE_NVIM_REPORT (JSON) and exits non-zero on any failed check.
local report_path = os.getenv("WHENCE_NVIM_REPORT")
local server_log = os.getenv("WHENCE_NVIM_SERVER_LOG") or (report_path .. ".server.log")
local server_python = os.getenv("WHENCE_SERVER_PYTHON")
local model = os.getenv("WHENCE_MODEL")
local report = { checks = {} }
local failed = false

local function check(name, ok, detail)
  table.insert(report.checks, { name = name, ok = ok and true or false, detail = detail })
  if not ok then failed = true end
end

local function finish()
  local file = io.open(report_path, "w")
  file:write(vim.fn.json_encode(report))
  file:close()
  vim.cmd(failed and "cquit 1" or "qall!")
end

local bufnr = vim.api.nvim_get_current_buf()
local client_id = vim.lsp.start_client({
  name = "whence",
  -- the server's log goes beside the report, so a session that hangs says what the server did
  cmd = { server_python, "-m", "whence_ls", "serve", "--log-file", server_log, "--verbose" },
  root_dir = vim.fn.getcwd(),
  -- no index at this path: the completion's lens is the one hint to build one (with an index,
  -- a lens appears only where a completion traces to a source)
  init_options = { model = model ~= "" and model or nil, traceIndex = vim.fn.getcwd() .. "/no-index-yet" },
  handlers = {
    ["whence/status"] = function(_, result) report.last_status = result end,
  },
})
vim.lsp.buf_attach_client(bufnr, client_id)
local client = vim.lsp.get_client_by_id(client_id)

local function request(method, params, timeout)
  local response = nil
  client.request(method, params, function(err, result) response = { err = err, result = result } end, bufnr)
  vim.wait(timeout or 60000, function() return response ~= nil end, 50)
  return response or { err = { message = "timed out" } }
end

-- the model loads in the background; the server says when it is ready
local ready = vim.wait(180000, function()
  local status = request("whence/status", vim.empty_dict(), 5000)
  return status.result ~= nil and status.result.state == "ready"
end, 500)
check("model ready", ready, report.last_status)
if not ready then return finish() end

local uri = vim.uri_from_bufnr(bufnr)
local last = vim.api.nvim_buf_line_count(bufnr) - 1
local last_text = vim.api.nvim_buf_get_lines(bufnr, last, last + 1, false)[1]
local cursor = { line = last, character = #last_text }
local offer = request("textDocument/inlineCompletion", {
  textDocument = { uri = uri },
  position = cursor,
  context = { triggerKind = 2 },
}, 120000)
local items = offer.result and (offer.result.items or offer.result) or {}
check("inline completion offered", #items > 0 and items[1].insertText ~= "", offer.result)
if #items == 0 then return finish() end
local item = items[1]
report.completion = item.insertText

-- accept: the editor inserts the text (Neovim sends didChange), then runs the item's command
local start = item.range and item.range.start or cursor
local finish_pos = item.range and item.range["end"] or cursor
local new_lines = vim.split(item.insertText, "\n", { plain = true })
vim.api.nvim_buf_set_text(bufnr, start.line, start.character, finish_pos.line, finish_pos.character, new_lines)
local accepted = request("workspace/executeCommand", { command = item.command.command, arguments = item.command.arguments })
check("accept recorded", accepted.err == nil and accepted.result ~= nil and accepted.result.recordId ~= nil, accepted.result or accepted.err)

-- a completion cut at the server's time budget shows its first lines; the rest is the next
-- ghost text at the end of the accepted part, answered from what the server kept: accept it too
local line_after, col_after = start.line + #new_lines - 1, (#new_lines == 1 and start.character or 0) + #new_lines[#new_lines]
for _ = 1, 3 do
  local more = request("textDocument/inlineCompletion", {
    textDocument = { uri = uri }, position = { line = line_after, character = col_after }, context = { triggerKind = 2 },
  }, 60000)
  local more_items = more.result and (more.result.items or more.result) or {}
  if #more_items == 0 or not tostring(more_items[1].insertText):find("^\n") then break end
  local rest = vim.split(more_items[1].insertText, "\n", { plain = true })
  vim.api.nvim_buf_set_text(bufnr, line_after, col_after, line_after, col_after, rest)
  request("workspace/executeCommand", { command = more_items[1].command.command, arguments = more_items[1].command.arguments })
  report.rests = (report.rests or 0) + 1
  line_after, col_after = line_after + #rest - 1, (#rest == 1 and col_after or 0) + #rest[#rest]
end

-- hover the first visible character of the completion
local hover_position = { line = start.line, character = start.character + (item.insertText:find("%S") or 1) - 1 }
local hover
vim.wait(60000, function()
  hover = request("textDocument/hover", { textDocument = { uri = uri }, position = hover_position }, 30000)
  local value = hover.result and hover.result.contents and hover.result.contents.value or ""
  return value:find("computing") == nil and value ~= ""
end, 1000)
local hover_text = hover.result and hover.result.contents and hover.result.contents.value or ""
report.hover = hover_text
check("hover shows probability and attribution", hover_text:find("p%s*=") ~= nil or hover_text:find("probability") ~= nil, hover_text)
-- the attribution part: source lines with bars and links, from the default estimator (stacked or calibrated)
check("hover shows the driving source lines", hover_text:find("%[line %d+%]%(") ~= nil and (hover_text:find("calibrated attention") ~= nil or hover_text:find("stacked attention") ~= nil or hover_text:find("stacked patching") ~= nil or hover_text:find("verified by %d+ ablations") ~= nil), hover_text)

-- the first generated token (often the healed one, re-producing the text before the cursor)
-- has its row as every other token does
local first_hover = request("textDocument/hover", { textDocument = { uri = uri }, position = start }, 30000)
local first_text = first_hover.result and first_hover.result.contents and first_hover.result.contents.value or ""
report.first_token_hover = first_text
check("hover on the first generated token shows its attribution",
  first_text:find("token 1/", 1, true) ~= nil and first_text:find("%[line %d+%]%(") ~= nil, first_text)

-- diagnostics arrive as publishDiagnostics into Neovim's own diagnostic store
vim.wait(30000, function() return #vim.diagnostic.get(bufnr) > 0 end, 200)
local diagnostics = vim.diagnostic.get(bufnr)
report.diagnostics = vim.tbl_map(function(d) return { line = d.lnum, message = d.message, source = d.source } end, diagnostics)
local all_whence = #diagnostics > 0
for _, d in ipairs(diagnostics) do if d.source ~= "whence" then all_whence = false end end
check("low-confidence diagnostics from whence", all_whence, report.diagnostics)

local lenses = request("textDocument/codeLens", { textDocument = { uri = uri } })
report.code_lenses = lenses.result
check("code lens above the completion (no index: the hint to build one)", lenses.result ~= nil and #lenses.result == 1, lenses.result or lenses.err)

local actions = request("textDocument/codeAction", {
  textDocument = { uri = uri },
  range = { start = { line = 3, character = 0 }, ["end"] = { line = 3, character = 0 } },
  context = { diagnostics = {} },
})
local titles = vim.tbl_map(function(a) return a.title end, actions.result or {})
report.code_actions = titles
local has_explain = false
for _, title in ipairs(titles) do if title:find("Explain this line") then has_explain = true end end
check("explain-this-line action", has_explain, titles)

local explained = request("workspace/executeCommand", { command = "whence.explainLine", arguments = { { uri = uri, line = 3 } } }, 120000)
check("explain line", explained.err == nil and explained.result ~= nil and explained.result.recordId ~= nil, explained.result or explained.err)
local explained_hover = request("textDocument/hover", { textDocument = { uri = uri }, position = { line = 3, character = 5 } }, 60000)
report.explained_hover = explained_hover.result and explained_hover.result.contents and explained_hover.result.contents.value or ""
check("hover on an explained line", report.explained_hover:find("p%s*=") ~= nil, report.explained_hover)

finish()
