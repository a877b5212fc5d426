// `dosql serve`: the sessions over TLS (the templates of serve_http_session.hpp and serve_ws_session.hpp, instantiated here).
#include "tools/cli/serve_http_session.hpp"

namespace dosql::cli::serve {

void start_tls_session(server& srv, tcp::socket sock) {
  std::make_shared<http_session<tls_stream>>(srv, tls_stream(std::move(sock), *srv.tls))->run();
}

}  // namespace dosql::cli::serve
