"""Pure ASGI middleware: request ids and the access log, API keys, request body size.

Order, outermost first (see ``app.create_app``): access (request id, access log, metrics)
-> CORS -> API keys -> body size -> the routes. CORS sits outside the key check so browser
preflights and 401s carry CORS headers; the key check sits outside the body limit so
unauthenticated clients cannot make the server buffer bodies.
"""
