// `dosql serve`: the sessions over plain TCP (the templates of serve_http_session.hpp and serve_ws_session.hpp, instantiated here).
#include "tools/cli/serve_http_session.hpp"

namespace dosql::cli::serve {

void start_plain_session(server& srv, tcp::socket sock) {
  std::make_shared<http_session<plain_stream>>(srv, plain_stream(std::move(sock)))->run();
}

}  // namespace dosql::cli::serve
