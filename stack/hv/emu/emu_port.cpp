// SPDX-License-Identifier: MIT
#include "hv/emu/emu_port.hpp"

#include <cstdlib>
#include <cstring>

#include "hv/emu/evtchn.hpp"
#include "hv/emu/grant.hpp"

namespace zc::hv::emu {

namespace {

class emu_port final : public port {
public:
    explicit emu_port(std::unique_ptr<client> c) noexcept
        : _c(std::move(c)), _frames(make_frame_allocator(*_c)) {}

    kind which() const noexcept override { return kind::emu; }
    const char* name() const noexcept override { return "emu"; }
    domid_t self() const noexcept override { return _c->self(); }
    std::string xenstore_path() const override { return _c->xenstore_path(); }

    result<std::unique_ptr<gntshr>> open_gntshr() noexcept override {
        auto h = make_gntshr(*_c, *_frames);
        if (!h) return err(-ENOMEM);
        return h;
    }
    result<std::unique_ptr<gnttab>> open_gnttab() noexcept override {
        auto h = make_gnttab(*_c);
        if (!h) return err(-ENOMEM);
        return h;
    }
    result<std::unique_ptr<evtchn>> open_evtchn() noexcept override { return make_evtchn(*_c); }

    client& cli() noexcept { return *_c; }

private:
    std::unique_ptr<client> _c;
    std::unique_ptr<frame_allocator> _frames;
};

} // namespace

result<std::unique_ptr<port>> open_port(const connect_options& o, std::string* why) noexcept {
    auto c = client::connect(o, why);
    if (!c) return err(c.error());
    return std::unique_ptr<port>(new emu_port(std::move(*c)));
}

result<std::unique_ptr<port>> open_port(std::string* why) noexcept {
    connect_options o;
    const char* a = std::getenv("ZCNET_EMU_ATTACH");
    o.attach = a && !std::strcmp(a, "1");
    return open_port(o, why);
}

client* client_of(port& p) noexcept {
    if (p.which() != kind::emu) return nullptr;
    return &static_cast<emu_port&>(p).cli();
}

} // namespace zc::hv::emu
