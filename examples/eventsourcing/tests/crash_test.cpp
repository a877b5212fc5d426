// The projector SIGKILLed at random moments while commands run (the real program: `demo`, whose
// clients append beside the projector and a live rebuild), then restarted: after it catches up,
// the projections equal a rebuild every time (nothing applied twice, nothing missing).
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "support.hpp"

using namespace es;
using namespace es::test;
using namespace std::chrono_literals;

namespace {
int rounds() {
  const char* s = std::getenv("ES_CRASH_ROUNDS");
  return s && *s ? std::atoi(s) : 50;
}
}  // namespace

TEST_CASE("the projector killed at random moments while commands run: projections equal a rebuild every time",
          "[eventsourcing][crash]") {
  temp_dir d;
  const std::string dir = d / "data";
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("DOSQL_TEST_SEED"); s && *s) seed = std::strtoull(s, nullptr, 10);
  INFO("seed " << seed << " (DOSQL_TEST_SEED to rerun)");
  std::mt19937_64 rng(seed);
  int64_t last_events = 0;
  int killed = 0;
  for (int round = 0; round < rounds(); ++round) {
    INFO("round " << round);
    const std::string log = d / ("round" + std::to_string(round) + ".log");
    pid_t pid = es_spawn({"--dir", dir, "--snapshot-every", "3", "demo", "--seconds", "2", "--clients", "3", "--seed",
                          std::to_string(rng() % 1000000 + 1)},
                         log);
    // Anywhere from start-up (recovery, the projector resuming) to the end of the run.
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 2200));
    ::kill(pid, SIGKILL);
    int code = wait_exit(pid, 60s);
    if (code == 128 + SIGKILL) ++killed;
    else {
      INFO(read_file(log));
      REQUIRE(code == 0);  // it finished before the kill: then it verified itself
    }
    if (!std::filesystem::exists(dir)) {
      // Killed before it created the directory (a slow start-up: ASan, a loaded machine): there
      // is nothing to verify, and nothing can have been acknowledged yet.
      REQUIRE(last_events == 0);
      continue;
    }
    auto v = es_run("--dir " + q(dir) + " verify");
    INFO("verify stdout: " << v.out << "\nstderr: " << v.err << "\ndemo log: " << read_file(log));
    REQUIRE(v.code == 0);
    auto j = json::parse(v.out);
    REQUIRE(j.at("equal") == true);
    REQUIRE(j.at("lagEntries") == 0);
    int64_t events = j.at("events").get<int64_t>();
    REQUIRE(events >= last_events);  // nothing acknowledged is lost
    last_events = events;
  }
  CHECK(killed > rounds() / 2);
  CHECK(last_events > 0);
}
