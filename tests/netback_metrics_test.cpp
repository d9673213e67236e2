// SPDX-License-Identifier: MIT
// zc-netback's Prometheus text exposition (netback/metrics.hpp): parsed back
// line by line with the format's own grammar, and every sample checked
// against the counters it was made from.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "netback/metrics.hpp"

using namespace zc;
using namespace zc::netback;

namespace {

struct parsed {
    std::map<std::string, std::string> type;              // family -> counter/gauge
    std::map<std::string, std::string> help;              // family -> text
    std::map<std::string, uint64_t> samples;              // "name{labels}" -> value
    std::vector<std::string> errors;
};

// The text format, version 0.0.4: comments `# HELP name text` and
// `# TYPE name type` come before the family's first sample and at most once;
// a sample is `name{label="value",...} value`.
parsed parse(const std::string& text) {
    parsed p;
    static const std::regex help(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$)");
    static const std::regex type(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
    static const std::regex sample(
        R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*\})? ([0-9]+)$)");
    std::set<std::string> seen_sample_of;
    std::istringstream in(text);
    std::string line;
    std::smatch m;
    while (std::getline(in, line)) {
        if (std::regex_match(line, m, help)) {
            if (p.help.count(m[1]) || seen_sample_of.count(m[1])) p.errors.push_back("late or repeated HELP: " + line);
            p.help[m[1]] = m[2];
        } else if (std::regex_match(line, m, type)) {
            if (p.type.count(m[1]) || seen_sample_of.count(m[1])) p.errors.push_back("late or repeated TYPE: " + line);
            p.type[m[1]] = m[2];
        } else if (std::regex_match(line, m, sample)) {
            std::string name = m[1];
            if (!p.type.count(name)) p.errors.push_back("sample before its TYPE: " + line);
            seen_sample_of.insert(name);
            std::string key = name + m[2].str();
            if (p.samples.count(key)) p.errors.push_back("duplicate series: " + line);
            p.samples[key] = std::stoull(m[7]);
        } else {
            p.errors.push_back("not the text format: '" + line + "'");
        }
    }
    return p;
}

vif_info make_vif(hv::domid_t fe, uint32_t devid, uint64_t base) {
    vif_info v{};
    v.frontend = fe;
    v.devid = devid;
    v.mac = mac_addr{{0x00, 0x16, 0x3e, 0x00, uint8_t(fe), uint8_t(devid)}};
    v.queues = 2;
    v.disabled = fe == 7;
    v.rx_stalled = false;
    v.disabled_reason = "frontend wrote \"x\\\n\" # HELP fake";
    // Distinct values in every counter: the k-th field is base + k.
    for (size_t k = 0; k < vif_stats::schema_size; k++) {
        uint64_t val = base + k;
        std::memcpy(reinterpret_cast<char*>(&v.stats) + k * sizeof(uint64_t), &val, sizeof val);
    }
    for (unsigned i = 0; i < batch_hist_buckets; i++) v.stats.batch_hist[i] = base * 10 + i;
    for (uint32_t q = 0; q < v.queues; q++) {
        queue_info qi;
        qi.index = q;
        qi.worker = q % 2;
        qi.tx_unconsumed = uint32_t(base / 100 + q);
        qi.rx_posted = 200 + q;
        qi.held_frames = 3 * q;
        qi.held_bytes = 1000 * q;
        qi.stalled = q == 1;
        v.queue_state.push_back(qi);
    }
    return v;
}

TEST(NetbackMetrics, EveryCounterOfEveryVifIsOneWellFormedSample) {
    std::vector<vif_info> vifs{make_vif(3, 0, 1000), make_vif(7, 1, 5000)};
    std::vector<device_info> devs{{3, 0, 4, 4, ""}, {7, 1, 5, 6, "bad \"xyzzy\"\nref"}, {9, 0, 2, 1, ""}};
    auto p = parse(prometheus_text(vifs, devs));
    for (auto& e : p.errors) ADD_FAILURE() << e;

    EXPECT_EQ(p.samples["zcnet_netback_vifs"], 2u);
    for (auto& v : vifs) {
        std::string l = "{vif=\"dom" + std::to_string(v.frontend) + "/" + std::to_string(v.devid) + "\",frontend=\"" +
                        std::to_string(v.frontend) + "\",devid=\"" + std::to_string(v.devid) + "\"}";
        for (size_t k = 0; k < vif_stats::schema_size; k++) {
            std::string name = std::string("zcnet_netback_") + vif_stats::schema[k].name + "_total";
            EXPECT_EQ(p.type[name], "counter") << name;
            EXPECT_FALSE(p.help[name].empty()) << name;
            ASSERT_TRUE(p.samples.count(name + l)) << name + l;
            EXPECT_EQ(p.samples[name + l], v.stats.field(k)) << name + l;
        }
        EXPECT_EQ(p.samples["zcnet_netback_vif_queues" + l], 2u);
        EXPECT_EQ(p.samples["zcnet_netback_vif_disabled" + l], v.disabled ? 1u : 0u);
        std::string b = l.substr(0, l.size() - 1);
        EXPECT_EQ(p.samples["zcnet_netback_tx_batches_total" + b + ",size=\"1\"}"], v.stats.batch_hist[0]);
        EXPECT_EQ(p.samples["zcnet_netback_tx_batches_total" + b + ",size=\"2-3\"}"], v.stats.batch_hist[1]);
        EXPECT_EQ(p.samples["zcnet_netback_tx_batches_total" + b + ",size=\"128+\"}"], v.stats.batch_hist[7]);
        EXPECT_EQ(p.samples["zcnet_netback_vif_info" + b + ",mac=\"" + to_string(v.mac) + "\"}"], 1u);
        for (auto& q : v.queue_state) {
            std::string ql = b + ",queue=\"" + std::to_string(q.index) + "\",worker=\"" + std::to_string(q.worker) + "\"}";
            EXPECT_EQ(p.type["zcnet_netback_queue_rx_posted"], "gauge");
            EXPECT_EQ(p.samples["zcnet_netback_queue_tx_unconsumed" + ql], q.tx_unconsumed) << ql;
            EXPECT_EQ(p.samples["zcnet_netback_queue_rx_posted" + ql], q.rx_posted) << ql;
            EXPECT_EQ(p.samples["zcnet_netback_queue_held_frames" + ql], q.held_frames) << ql;
            EXPECT_EQ(p.samples["zcnet_netback_queue_held_bytes" + ql], q.held_bytes) << ql;
            EXPECT_EQ(p.samples["zcnet_netback_queue_stalled" + ql], q.stalled ? 1u : 0u) << ql;
        }
    }
    // Devices: the one that never connected has its states, no counters.
    EXPECT_EQ(p.samples["zcnet_netback_device_frontend_state{vif=\"dom9/0\",frontend=\"9\",devid=\"0\"}"], 1u);
    EXPECT_EQ(p.samples["zcnet_netback_device_backend_state{vif=\"dom7/1\",frontend=\"7\",devid=\"1\"}"], 5u);
    EXPECT_EQ(p.samples.count("zcnet_netback_tx_packets_total{vif=\"dom9/0\",frontend=\"9\",devid=\"0\"}"), 0u);
    // Frontend-written text (the disable reason, a device error) never
    // reaches the exposition, where it could forge lines.
    EXPECT_EQ(prometheus_text(vifs, devs).find("fake"), std::string::npos);
    EXPECT_EQ(prometheus_text(vifs, devs).find("xyzzy"), std::string::npos);
}

TEST(NetbackMetrics, UplinkCountersAndModeAreExported) {
    uplink_info u{};
    u.ifname = "veth\"0\n";
    u.mode = "copy";
    u.mac = mac_addr{{0x02, 0, 0, 0, 0, 9}};
    u.mtu = 1500;
    for (size_t k = 0; k < uplink_stats::schema_size; k++) {
        uint64_t val = 300 + k;
        std::memcpy(reinterpret_cast<char*>(&u.stats) + k * sizeof(uint64_t), &val, sizeof val);
    }
    u.xdp_redirected = 77;
    u.fill_starved = 5;
    auto p = parse(prometheus_text({}, {}, {u}));
    for (auto& e : p.errors) ADD_FAILURE() << e;
    const std::string l = "{uplink=\"veth\\\"0\\n\"}"; // the name escaped as the format says
    for (size_t k = 0; k < uplink_stats::schema_size; k++) {
        std::string name = std::string("zcnet_netback_uplink_") + uplink_stats::schema[k].name + "_total";
        EXPECT_EQ(p.type[name], "counter") << name;
        ASSERT_TRUE(p.samples.count(name + l)) << name + l;
        EXPECT_EQ(p.samples[name + l], u.stats.field(k)) << name;
    }
    EXPECT_EQ(p.samples["zcnet_netback_uplink_xdp_redirected_total" + l], 77u);
    EXPECT_EQ(p.samples["zcnet_netback_uplink_fill_starved_total" + l], 5u);
    EXPECT_EQ(p.samples["zcnet_netback_uplink_info{uplink=\"veth\\\"0\\n\",mode=\"copy\",mac=\"02:00:00:00:00:09\","
                        "mtu=\"1500\"}"],
              1u);
}

TEST(NetbackMetrics, NoVifsIsStillAValidExposition) {
    auto text = prometheus_text({}, {});
    auto p = parse(text);
    for (auto& e : p.errors) ADD_FAILURE() << e;
    EXPECT_EQ(p.samples.size(), 1u);
    EXPECT_EQ(p.samples["zcnet_netback_vifs"], 0u);
    EXPECT_EQ(p.type["zcnet_netback_tx_packets_total"], "counter");
}

TEST(NetbackMetrics, FileIsReplacedAtomically) {
    char dir[] = "/tmp/zcnet-metrics-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/zcnet.prom";
    ASSERT_EQ(write_file_atomic(path, "a 1\n"), 0);
    mode_t old_mask = ::umask(0077);
    ASSERT_EQ(write_file_atomic(path, "b 2\n"), 0);
    struct stat st{};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    ::umask(old_mask);
    EXPECT_EQ(st.st_mode & 0777, 0644u) << "readable by the collector whatever the umask";
    FILE* f = std::fopen(path.c_str(), "r");
    ASSERT_NE(f, nullptr);
    char buf[16] = {};
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    EXPECT_EQ(std::string(buf, n), "b 2\n");
    // Nothing but the file itself is left in the directory.
    std::string leftover = std::string(dir) + "/zcnet.prom.tmp." + std::to_string(::getpid());
    EXPECT_NE(::access(leftover.c_str(), F_OK), 0);
    EXPECT_EQ(write_file_atomic(std::string(dir) + "/no/such/dir/x.prom", "c 3\n"), -ENOENT);
    ::unlink(path.c_str());
    ::rmdir(dir);
}

} // namespace
