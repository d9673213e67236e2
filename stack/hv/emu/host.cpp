// SPDX-License-Identifier: MIT
#include "hv/emu/host.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "hv/emu/emu_port.hpp"

namespace zc::hv::emu {

result<std::unique_ptr<host>> host::create(const std::string& tag, std::string* why) noexcept {
    std::string t = "/tmp/zcnet-" + tag + "-XXXXXX";
    std::vector<char> tmpl(t.begin(), t.end());
    tmpl.push_back('\0');
    if (!::mkdtemp(tmpl.data())) {
        const int e = errno;
        if (why) *why = "mkdtemp " + t + ": " + std::strerror(e);
        return err(-e);
    }
    std::unique_ptr<host> h(new host());
    h->_dir = tmpl.data();
    auto b = broker::create({h->_dir, true}, why);
    if (!b) return err(b.error());
    h->_broker = std::move(*b);
    if (const int e = h->_broker->start_thread(); e < 0) {
        if (why) *why = "broker thread: " + std::string(std::strerror(-e));
        return err(e);
    }
    return h;
}

host::~host() {
    stop();
    if (!_dir.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(_dir, ec);
    }
}

void host::stop() noexcept {
    if (_broker) _broker->stop();
}

const std::string& host::sock() const noexcept { return _broker->socket_path(); }

result<std::unique_ptr<hv::port>> host::domain(hv::domid_t d, uint32_t mem_pages, std::string* why,
                                               bool attach, bool privileged) noexcept {
    connect_options o;
    o.token = _broker->admin_token();
    o.privileged = privileged;
    o.sock = sock();
    o.dom = d;
    o.mem_pages = mem_pages;
    o.attach = attach;
    return open_port(o, why);
}

} // namespace zc::hv::emu
