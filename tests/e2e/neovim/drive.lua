-- Drives Neovim as a user would, headless: open the training script with the user's own overnight.lua, read the
-- per-line history (inlay hints, hover), see the CodeLenses, run the Accept lens, and write what happened to $OUT.
local out = { steps = {} }

local function step(name)
  table.insert(out.steps, name)
end

local function finish()
  vim.fn.writefile({ vim.fn.json_encode(out) }, os.getenv("OUT"))
  vim.cmd("qa!")
end

local ok, err = pcall(function()
  local overnight = dofile(os.getenv("OVERNIGHT_LUA"))
  local messages = {}
  vim.notify = function(msg, level)
    table.insert(messages, msg)
  end
  -- Neovim shows the daemon's window/showMessage in its message area; record each on the way.
  local show = vim.lsp.handlers["window/showMessage"]
  vim.lsp.handlers["window/showMessage"] = function(e, result, ctx, config)
    table.insert(messages, result.message)
    return show(e, result, ctx, config)
  end
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("TRAIN")))
  local buf = vim.api.nvim_get_current_buf()
  local id = overnight.start(buf)
  assert(id ~= nil, "overnight.start gave no client")
  local client = vim.lsp.get_client_by_id(id)
  assert(vim.wait(30000, function()
    return client.server_capabilities ~= nil and client.initialized
  end, 50), "the client did not initialize")
  step("initialized")
  out.commands = client.server_capabilities.executeCommandProvider.commands
  local uri = vim.uri_from_bufnr(buf)
  local n = vim.api.nvim_buf_line_count(buf)

  -- Inlay hints (a raw request: Neovim 0.7 has no inlay-hint UI; plugins make this same request).
  local hints = vim.lsp.buf_request_sync(buf, "textDocument/inlayHint", {
    textDocument = { uri = uri },
    range = { start = { line = 0, character = 0 }, ["end"] = { line = n, character = 0 } },
  }, 20000)
  out.hints = {}
  for _, response in pairs(hints or {}) do
    for _, hint in ipairs(response.result or {}) do
      table.insert(out.hints, { line = hint.position.line, label = hint.label })
    end
  end
  step("hints")

  -- Hover on the first line that has a history.
  if #out.hints > 0 then
    local hover = vim.lsp.buf_request_sync(buf, "textDocument/hover", {
      textDocument = { uri = uri }, position = { line = out.hints[1].line, character = 0 },
    }, 20000)
    for _, response in pairs(hover or {}) do
      if response.result then
        out.hover = response.result.contents.value
      end
    end
  end
  step("hover")

  -- CodeLens, as the user's autocommands refresh them.
  vim.lsp.codelens.refresh()
  assert(vim.wait(20000, function()
    return #vim.lsp.codelens.get(buf) > 0
  end, 50), "no CodeLens came")
  out.lenses = {}
  local accept_line = nil
  for _, lens in ipairs(vim.lsp.codelens.get(buf)) do
    table.insert(out.lenses, { line = lens.range.start.line, title = lens.command.title, command = lens.command.command })
    if accept_line == nil and lens.command.title:find("Accept") and os.getenv("ACCEPT_TEXT") ~= nil then
      local text = vim.api.nvim_buf_get_lines(buf, lens.range.start.line, lens.range.start.line + 1, false)[1]
      if text:find(os.getenv("ACCEPT_OLD"), 1, true) then
        accept_line = lens.range.start.line
      end
    end
  end
  step("lenses")

  -- Run the Accept lens on that line: Neovim asks which lens (vim.ui.select); the user picks "Accept".
  assert(accept_line ~= nil, "no Accept lens on the line to accept")
  vim.ui.select = function(items, opts, on_choice)
    for i, item in ipairs(items) do
      if opts.format_item(item):find("Accept") then
        return on_choice(item, i)
      end
    end
    on_choice(nil, nil)
  end
  vim.api.nvim_win_set_cursor(0, { accept_line + 1, 0 })
  vim.lsp.codelens.run()
  local want = os.getenv("ACCEPT_TEXT")
  out.accepted = vim.wait(20000, function()
    return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n"):find(want, 1, true) ~= nil
  end, 50)
  out.modified = vim.api.nvim_buf_get_option(buf, "modified")
  vim.wait(20000, function()  -- the server says it after the edit lands: a loaded CI machine needs more than 3 s
    for _, m in ipairs(messages) do
      if m:find("accepted") then
        return true
      end
    end
    return false
  end, 50)
  out.messages = messages
  step("accepted")
end)
if not ok then
  out.error = tostring(err)
end
finish()
