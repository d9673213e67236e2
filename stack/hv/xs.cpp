// SPDX-License-Identifier: MIT
#include "hv/xs.hpp"

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <optional>

extern "C" {
#include <xenstore.h>
}

namespace zc::hv {

namespace {

// libxenstore takes the daemon's address only from the environment
// (XENSTORED_PATH, read inside xs_open()), so opening on an explicit path
// sets the variable for the duration of the call. The mutex serialises our
// own opens; other code reading the environment concurrently is not
// protected (setenv is not thread-safe), so open handles early.
std::mutex g_env_mu;

// libxenstore returns malloc'ed memory; own it until copied out.
struct c_free {
    void operator()(void* p) const noexcept { std::free(p); }
};
template <class T>
using c_ptr = std::unique_ptr<T, c_free>;

int neg_errno() noexcept { return errno ? -errno : -EIO; }

} // namespace

result<std::unique_ptr<xs>> xs::open(const std::string& path) {
    xs_handle* h = nullptr;
    int e = 0;
    if (path.empty()) {
        h = xs_open(0);
        e = errno;
    } else {
        std::lock_guard<std::mutex> g(g_env_mu);
        const char* old = std::getenv("XENSTORED_PATH");
        std::optional<std::string> saved;
        if (old)
            saved = old;
        if (setenv("XENSTORED_PATH", path.c_str(), 1) != 0)
            return err(-errno);
        h = xs_open(XS_OPEN_SOCKETONLY);
        e = errno;
        if (saved)
            setenv("XENSTORED_PATH", saved->c_str(), 1);
        else
            unsetenv("XENSTORED_PATH");
    }
    if (!h)
        return err(e ? -e : -ENOENT);
    return std::unique_ptr<xs>(new xs(h));
}

xs::~xs() { xs_close(_h); }

result<std::string> xs::read(const std::string& path, txn t) {
    unsigned len = 0;
    errno = 0;
    c_ptr<char> v(static_cast<char*>(xs_read(_h, t, path.c_str(), &len)));
    if (!v)
        return err(neg_errno());
    return std::string(v.get(), len);
}

int xs::write(const std::string& path, const std::string& value, txn t) {
    errno = 0;
    return xs_write(_h, t, path.c_str(), value.data(), unsigned(value.size())) ? 0 : neg_errno();
}

int xs::mkdir(const std::string& path, txn t) {
    errno = 0;
    return xs_mkdir(_h, t, path.c_str()) ? 0 : neg_errno();
}

int xs::rm(const std::string& path, txn t) {
    errno = 0;
    return xs_rm(_h, t, path.c_str()) ? 0 : neg_errno();
}

result<std::vector<std::string>> xs::directory(const std::string& path, txn t) {
    unsigned n = 0;
    errno = 0;
    c_ptr<char*> v(xs_directory(_h, t, path.c_str(), &n));
    if (!v)
        return err(neg_errno());
    std::vector<std::string> out;
    out.reserve(n);
    for (unsigned i = 0; i < n; i++)
        out.emplace_back(v.get()[i]);
    return out;
}

int xs::set_perms(const std::string& path, const std::vector<std::string>& perms, txn t) {
    if (perms.empty())
        return -EINVAL;
    std::vector<xs_permissions> p(perms.size());
    for (size_t i = 0; i < perms.size(); i++) {
        // xs_strings_to_perms() parses one NUL-terminated entry at a time.
        if (perms[i].size() < 2 || !xs_strings_to_perms(&p[i], 1, perms[i].c_str()))
            return -EINVAL;
    }
    errno = 0;
    return xs_set_permissions(_h, t, path.c_str(), p.data(), unsigned(p.size())) ? 0 : neg_errno();
}

result<std::vector<std::string>> xs::get_perms(const std::string& path, txn t) {
    unsigned n = 0;
    errno = 0;
    c_ptr<xs_permissions> p(xs_get_permissions(_h, t, path.c_str(), &n));
    if (!p)
        return err(neg_errno());
    std::vector<std::string> out;
    for (unsigned i = 0; i < n; i++) {
        const xs_permissions& e = p.get()[i];
        char c = 'n';
        if ((e.perms & (XS_PERM_READ | XS_PERM_WRITE)) == (XS_PERM_READ | XS_PERM_WRITE))
            c = 'b';
        else if (e.perms & XS_PERM_READ)
            c = 'r';
        else if (e.perms & XS_PERM_WRITE)
            c = 'w';
        out.push_back(c + std::to_string(e.id));
    }
    return out;
}

int xs::watch(const std::string& path, const std::string& token) {
    errno = 0;
    return xs_watch(_h, path.c_str(), token.c_str()) ? 0 : neg_errno();
}

int xs::unwatch(const std::string& path, const std::string& token) {
    errno = 0;
    return xs_unwatch(_h, path.c_str(), token.c_str()) ? 0 : neg_errno();
}

int xs::fileno() { return xs_fileno(_h); }

result<xs::watch_event> xs::read_watch() {
    errno = 0;
    c_ptr<char*> v(xs_check_watch(_h));
    if (!v)
        return err(errno ? -errno : -EAGAIN);
    return watch_event{v.get()[XS_WATCH_PATH], v.get()[XS_WATCH_TOKEN]};
}

result<xs::txn> xs::transaction_start() {
    errno = 0;
    xs_transaction_t t = xs_transaction_start(_h);
    if (t == XBT_NULL)
        return err(neg_errno());
    return txn(t);
}

int xs::transaction_end(txn t, bool abort) {
    errno = 0;
    return xs_transaction_end(_h, t, abort) ? 0 : neg_errno();
}

result<std::string> xs::get_domain_path(unsigned domid) {
    errno = 0;
    c_ptr<char> v(xs_get_domain_path(_h, domid));
    if (!v)
        return err(neg_errno());
    return std::string(v.get());
}

} // namespace zc::hv
