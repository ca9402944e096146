// SPDX-License-Identifier: Apache-2.0
#include "supervisor/logging.h"

#include <boost/core/null_deleter.hpp>
#include <boost/json.hpp>
#include <boost/log/attributes/value_extraction.hpp>
#include <boost/log/core.hpp>
#include <boost/log/expressions/keyword.hpp>
#include <boost/log/sinks/sync_frontend.hpp>
#include <boost/log/sinks/text_ostream_backend.hpp>
#include <boost/log/sources/record_ostream.hpp>
#include <boost/log/sources/severity_logger.hpp>
#include <boost/log/trivial.hpp>
#include <boost/log/utility/formatting_ostream.hpp>
#include <boost/smart_ptr/make_shared.hpp>
#include <chrono>
#include <iostream>

namespace sbx::supervisor {
namespace logging = boost::log;
using Severity = logging::trivial::severity_level;

namespace {

LogFormat g_format = LogFormat::kText;

std::string now_iso8601() {
  using namespace std::chrono;
  auto now = system_clock::now();
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms % 1000));
  return buf;
}

void log(Severity level, const std::string& id, const std::string& message) {
  static logging::sources::severity_logger<Severity> logger;
  std::string line;
  if (g_format == LogFormat::kJson) {
    line = boost::json::serialize(boost::json::object{{"ts", now_iso8601()},
                                                      {"level", logging::trivial::to_string(level)},
                                                      {"id", id},
                                                      {"msg", message}});
  } else {
    line = "sbx-supervisor[" + id + "] " + logging::trivial::to_string(level) + ": " + message;
  }
  BOOST_LOG_SEV(logger, level) << line;
}

}  // namespace

void init_logging(LogFormat format) {
  g_format = format;
  using Backend = logging::sinks::text_ostream_backend;
  auto backend = boost::make_shared<Backend>();
  backend->add_stream(boost::shared_ptr<std::ostream>(&std::clog, boost::null_deleter()));
  backend->auto_flush(true);
  auto sink = boost::make_shared<logging::sinks::synchronous_sink<Backend>>(backend);
  logging::core::get()->remove_all_sinks();
  logging::core::get()->add_sink(sink);
}

void log_info(const std::string& id, const std::string& m) {
  log(Severity::info, id, m);
}
void log_warning(const std::string& id, const std::string& m) {
  log(Severity::warning, id, m);
}
void log_error(const std::string& id, const std::string& m) {
  log(Severity::error, id, m);
}

}  // namespace sbx::supervisor
