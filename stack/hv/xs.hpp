// SPDX-License-Identifier: MIT
// A small RAII wrapper over libxenstore, the xenstore client on both
// hypervisor backends (on emu, libxenstore talks to the emulated xenstored
// through its Unix socket; see hv/emu/xenstored.hpp).
//
// Errors are negative errnos as libxenstore reports them: -ENOENT (no such
// node), -EACCES (permissions), -EINVAL (bad path or argument), -EEXIST
// (watch already set), -EAGAIN (transaction conflict: retry it), -E2BIG,
// -ENOSPC (quota), -EBADF/-EPIPE-like errors when the daemon went away.
//
// One handle may be used from several threads (libxenstore serialises
// requests); watch events are read without blocking through read_watch().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/result.hpp"

struct xs_handle;

namespace zc::hv {

class xs {
public:
    // libxenstore's xs_transaction_t; 0 (null) means "no transaction".
    using txn = uint32_t;
    static constexpr txn no_txn = 0;

    struct watch_event {
        std::string path;
        std::string token;
    };

    // Connect to xenstored at `path` (a Unix socket), or with "" wherever
    // libxenstore looks by default (XENSTORED_PATH, the daemon socket, then
    // /dev/xen/xenbus). Thread-safe.
    static result<std::unique_ptr<xs>> open(const std::string& path);

    ~xs();
    xs(const xs&) = delete;
    xs& operator=(const xs&) = delete;

    result<std::string> read(const std::string& path, txn t = no_txn);
    int write(const std::string& path, const std::string& value, txn t = no_txn);
    // Succeeds if the node exists already.
    int mkdir(const std::string& path, txn t = no_txn);
    // Recursive; succeeds if the node is already gone but its parent exists.
    int rm(const std::string& path, txn t = no_txn);
    result<std::vector<std::string>> directory(const std::string& path, txn t = no_txn);
    // Permissions in xenstore's string form, owner first: {"n0", "r3"}.
    // Letters: n none, r read, w write, b both. Errors: -EINVAL for a
    // malformed entry or an empty list, -EACCES, -EPERM (changing the owner
    // from a guest), -ENOENT.
    int set_perms(const std::string& path, const std::vector<std::string>& perms, txn t = no_txn);
    result<std::vector<std::string>> get_perms(const std::string& path, txn t = no_txn);

    // A watch fires once right after it is set, then on every change of
    // `path` or a node below it.
    int watch(const std::string& path, const std::string& token);
    int unwatch(const std::string& path, const std::string& token);
    // Readable while watch events are pending.
    int fileno();
    // Next pending watch event, or -EAGAIN when none. Never blocks.
    result<watch_event> read_watch();

    result<txn> transaction_start();
    // Commit (abort = false) or discard. -EAGAIN: another change conflicted;
    // the transaction is gone and should be retried from the start.
    int transaction_end(txn t, bool abort);

    result<std::string> get_domain_path(unsigned domid);

    // The libxenstore handle, for calls this wrapper does not cover.
    xs_handle* raw() noexcept { return _h; }

private:
    explicit xs(xs_handle* h) noexcept : _h(h) {}
    xs_handle* _h;
};

} // namespace zc::hv
