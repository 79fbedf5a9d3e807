// A stand-in for the Hugging Face hub on loopback, for the pull tests: the tree endpoint (with
// Link pagination), resolve URLs that redirect to a "CDN" path carrying X-Linked-Etag, Range
// requests (206), ETags, private repositories (401 without the token), 404s, and injected faults:
// a connection dropped mid-file and a published digest that does not match the bytes.
#pragma once
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/sha256.h"

namespace pensieve::hub::test {

class FakeHub {
 public:
  struct File {
    std::string content;
    bool lfs = true;
    std::string published_sha;  // "" = the real one
  };
  struct Repo {
    std::map<std::string, File> files;
    bool is_private = false;
    int page_size = 0;  // 0: one page
  };
  struct Request {
    std::string target, range, authorization;
  };

  FakeHub() : acceptor_(ioc_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~FakeHub() {
    stop_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket wake(ioc_);
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
    for (auto& t : workers_) t.join();
  }

  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port()); }

  void add(const std::string& repo, Repo r) {
    std::lock_guard lock(mu_);
    repos_[repo] = std::move(r);
  }
  // The next request for the file's bytes sends only `bytes` of them, then closes the connection.
  void drop_once(const std::string& path, size_t bytes) {
    std::lock_guard lock(mu_);
    drops_[path] = bytes;
  }
  // Requests for the file's bytes send `bytes` of them, then hang until release() (a stalled
  // transfer for the Ctrl-C test).
  void stall(const std::string& path, size_t bytes) {
    std::lock_guard lock(mu_);
    stalls_[path] = bytes;
  }
  void release() {
    std::lock_guard lock(mu_);
    stalls_.clear();
  }
  std::vector<Request> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::string token = "secret-token";

 private:
  void accept_loop() {
    for (;;) {
      boost::asio::ip::tcp::socket s(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(s, ec);
      if (stop_) return;
      if (ec) continue;
      std::lock_guard lock(mu_);
      workers_.emplace_back([this, sock = std::move(s)]() mutable { serve(std::move(sock)); });
    }
  }

  static void send(boost::asio::ip::tcp::socket& s, int status, const std::string& reason,
                   const std::vector<std::pair<std::string, std::string>>& headers, const std::string& body,
                   size_t content_length) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
    for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
    out += "Content-Length: " + std::to_string(content_length) + "\r\nConnection: close\r\n\r\n" + body;
    boost::system::error_code ec;
    boost::asio::write(s, boost::asio::buffer(out), ec);
  }

  void serve(boost::asio::ip::tcp::socket s) {
    namespace http = boost::beast::http;
    boost::beast::flat_buffer buf;
    http::request<http::string_body> req;
    boost::system::error_code ec;
    http::read(s, buf, req, ec);
    if (ec) return;
    const std::string target(req.target());
    Request r{target, std::string(req[http::field::range]), std::string(req[http::field::authorization])};
    std::unique_lock lock(mu_);
    requests_.push_back(r);
    auto text = [&](int status, const std::string& reason, const std::string& body,
                    std::vector<std::pair<std::string, std::string>> h = {}) {
      send(s, status, reason, h, body, body.size());
    };
    // /api/models/OWNER/NAME/tree/REV?recursive=true[&cursor=N]
    // /OWNER/NAME/resolve/REV/PATH  → 302 /cdn/OWNER/NAME/PATH
    // /cdn/OWNER/NAME/PATH
    std::string path = target.substr(0, target.find('?'));
    const std::string query = target.find('?') == std::string::npos ? "" : target.substr(target.find('?') + 1);
    bool api = path.rfind("/api/models/", 0) == 0, cdn = path.rfind("/cdn/", 0) == 0;
    std::string rest = api ? path.substr(12) : cdn ? path.substr(5) : path.substr(1);
    const size_t slash1 = rest.find('/'), slash2 = rest.find('/', slash1 + 1);
    if (slash1 == std::string::npos || slash2 == std::string::npos) return text(404, "Not Found", "{}");
    const std::string repo = rest.substr(0, slash2);
    rest = rest.substr(slash2 + 1);
    auto it = repos_.find(repo);
    if (it == repos_.end()) return text(404, "Not Found", R"({"error":"Repository not found"})");
    Repo& rp = it->second;
    if (rp.is_private && r.authorization != "Bearer " + token)
      return text(401, "Unauthorized", R"({"error":"Invalid username or password."})");
    if (api) {  // tree/REV
      if (rest.rfind("tree/", 0) != 0) return text(404, "Not Found", "{}");
      size_t cursor = 0;
      if (auto c = query.find("cursor="); c != std::string::npos) cursor = std::stoul(query.substr(c + 7));
      nlohmann::json list = nlohmann::json::array();
      size_t i = 0, end = rp.page_size ? cursor + size_t(rp.page_size) : rp.files.size();
      for (const auto& [p, f] : rp.files) {
        if (i >= cursor && i < end) {
          nlohmann::json e = {{"type", "file"}, {"oid", "0123"}, {"size", f.content.size()}, {"path", p}};
          if (f.lfs)
            e["lfs"] = {{"oid", f.published_sha.empty() ? sha256_hex(f.content) : f.published_sha},
                        {"size", f.content.size()}, {"pointerSize", 134}};
          list.push_back(e);
        }
        ++i;
      }
      std::vector<std::pair<std::string, std::string>> h;
      if (end < rp.files.size())
        h.push_back({"Link", "<" + endpoint() + path + "?recursive=true&cursor=" + std::to_string(end) + ">; rel=\"next\""});
      return text(200, "OK", list.dump(), h);
    }
    if (!cdn) {  // resolve/REV/PATH
      if (rest.rfind("resolve/", 0) != 0) return text(404, "Not Found", "{}");
      const std::string file = rest.substr(rest.find('/', 8) + 1);
      auto f = rp.files.find(file);
      if (f == rp.files.end()) return text(404, "Not Found", R"({"error":"Entry not found"})");
      const std::string sha = f->second.published_sha.empty() ? sha256_hex(f->second.content) : f->second.published_sha;
      return text(302, "Found", "", {{"Location", "/cdn/" + repo + "/" + file}, {"X-Linked-Etag", "\"" + sha + "\""}});
    }
    auto f = rp.files.find(rest);
    if (f == rp.files.end()) return text(404, "Not Found", "{}");
    const std::string& content = f->second.content;
    size_t start = 0;
    if (r.range.rfind("bytes=", 0) == 0) start = std::stoul(r.range.substr(6));
    if (start > content.size()) return text(416, "Range Not Satisfiable", "");
    const std::string etag = "\"" + sha256_hex(content) + "\"";
    std::vector<std::pair<std::string, std::string>> h = {{"ETag", etag}};
    int status = 200;
    if (!r.range.empty()) {
      status = 206;
      h.push_back({"Content-Range", "bytes " + std::to_string(start) + "-" + std::to_string(content.size() - 1) + "/" +
                                        std::to_string(content.size())});
    }
    const std::string body = content.substr(start);
    if (auto d = drops_.find(rest); d != drops_.end()) {
      const size_t keep = d->second > start ? d->second - start : 0;
      drops_.erase(d);
      lock.unlock();
      send(s, status, status == 206 ? "Partial Content" : "OK", h, body.substr(0, keep), body.size());
      boost::system::error_code ignored;
      s.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
      s.close(ignored);
      return;
    }
    if (auto st = stalls_.find(rest); st != stalls_.end()) {
      const size_t keep = st->second > start ? st->second - start : 0;
      lock.unlock();
      send(s, status, status == 206 ? "Partial Content" : "OK", h, body.substr(0, keep), body.size());
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::lock_guard again(mu_);
        if (stop_ || !stalls_.count(rest)) break;
      }
      return;
    }
    lock.unlock();
    send(s, status, status == 206 ? "Partial Content" : "OK", h, body, body.size());
  }

  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::map<std::string, Repo> repos_;
  std::map<std::string, size_t> drops_, stalls_;
  std::vector<Request> requests_;
};

}  // namespace pensieve::hub::test
