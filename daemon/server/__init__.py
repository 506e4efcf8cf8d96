"""The daemon's server side: editors and the CLI attach over the LSP base protocol (pygls).

One ``LanguageServer`` per connection over one shared ``DaemonCore``; nothing below the server
imports it. The server only translates between the protocol and the loop.
"""
