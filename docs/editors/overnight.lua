-- Overnight in Neovim (0.7 or newer): the daemon's language server, through `overnight attach`.
--
-- Copy this file to ~/.config/nvim/lua/overnight.lua and add `require("overnight").setup()` to your init.lua.
-- In a Python buffer of a workspace whose daemon runs (`overnight daemon --detach`) you get:
--   * hover: the experiments that touched the line (K);
--   * CodeLens on each suggested change: "✓ Accept", "✗ Reject" and its evidence; run one with
--     :lua vim.lsp.codelens.run()  (accept puts the change into the buffer, unsaved: :w keeps it);
--   * the loop's controls as server commands, e.g. :lua require("overnight").command("overnight.loop.pause")
--     (also overnight.loop.resume, overnight.loop.status, overnight.loop.stopAfterCurrent, overnight.loop.stop);
--   * the daemon's messages (a kept experiment, what a command did) through vim.notify.
-- The tests start Neovim headless with this very file (tests/e2e/test_neovim.py).

local M = {}

M.clients = {} -- workspace root -> client id

--- The workspace root above `path`: the folder holding .overnight/ (nil outside a workspace).
local function workspace_root(path)
  local found = vim.fn.finddir(".overnight", vim.fn.fnamemodify(path, ":p:h") .. ";")
  if found == "" then
    return nil
  end
  return vim.fn.fnamemodify(found, ":p:h:h")
end

--- The daemon's token: .overnight/daemon.json, readable by you alone; the daemon answers nothing without it.
local function read_token(root)
  local file = root .. "/.overnight/daemon.json"
  if vim.fn.filereadable(file) == 0 then
    return nil
  end
  local ok, info = pcall(vim.fn.json_decode, table.concat(vim.fn.readfile(file), "\n"))
  if ok and type(info) == "table" then
    return info.token
  end
  return nil
end

--- Attach buffer `bufnr` to its workspace's daemon (one client per workspace); returns the client id or nil.
function M.start(bufnr)
  bufnr = bufnr or vim.api.nvim_get_current_buf()
  local root = workspace_root(vim.api.nvim_buf_get_name(bufnr))
  if root == nil then
    return nil
  end
  local id = M.clients[root]
  if id == nil or vim.lsp.client_is_stopped(id) then
    local token = read_token(root)
    if token == nil then
      vim.notify("Overnight: no daemon runs for " .. root .. " (start one: overnight daemon --detach)", vim.log.levels.WARN)
      return nil
    end
    id = vim.lsp.start_client({
      name = "overnight",
      cmd = { "overnight", "-C", root, "attach" },
      root_dir = root,
      init_options = { token = token, protocolVersion = "1.3" },
    })
    M.clients[root] = id
  end
  if id ~= nil then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  return id
end

--- Run one of the daemon's server commands (see protocol/README.md, "Server commands").
function M.command(name, arguments)
  for _, id in pairs(M.clients) do
    local client = vim.lsp.get_client_by_id(id)
    if client ~= nil then
      client.request("workspace/executeCommand", { command = name, arguments = arguments or {} }, function() end)
    end
  end
end

function M.setup()
  vim.api.nvim_create_autocmd("FileType", {
    pattern = "python",
    callback = function(args)
      M.start(args.buf)
    end,
  })
  -- CodeLenses are pulled: refresh them when the buffer is shown or edited.
  vim.api.nvim_create_autocmd({ "BufEnter", "InsertLeave", "BufWritePost" }, {
    pattern = "*.py",
    callback = function()
      vim.lsp.codelens.refresh()
    end,
  })
end

return M
