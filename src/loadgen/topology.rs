//! The static model of the synthetic shop: services, their operations and call graphs, database
//! queries, external APIs and per-language telemetry details.
//!
//! Everything here is data; `workload.rs` walks it with a seeded RNG to produce traces.
//!
//! ```text
//!  web:    frontend ──► auth, catalog, cart, recommendation, inventory, checkout
//!  mobile: api-gateway ──► auth, catalog, inventory, user, checkout
//!  checkout ──► cart, catalog (per item), shipping, inventory, payment ──► api.stripe.com
//!           └─► postgres, kafka "orders" ──► shipping (consumer), email (consumer)
//!  every service: postgres / redis clients, /healthz (or grpc.health.v1) probes
//! ```

/// Services, indexing [`SERVICES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Svc {
    Frontend,
    Gateway,
    Checkout,
    Payment,
    Cart,
    Catalog,
    Inventory,
    User,
    Auth,
    Recommendation,
    Shipping,
    Email,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lang {
    Go,
    Java,
    Node,
    Python,
    DotNet,
    Rust,
    Ruby,
}

pub(crate) struct ServiceDef {
    pub(crate) svc: Svc,
    pub(crate) name: &'static str,
    pub(crate) namespace: &'static str,
    pub(crate) version: &'static str,
    /// Version run by the last pod when the service has 3+ pods (a canary rollout).
    pub(crate) canary_version: &'static str,
    pub(crate) lang: Lang,
    pub(crate) pods: usize,
    pub(crate) port: u16,
    /// `Some("pkg.Service")` for gRPC services, `None` for HTTP services.
    pub(crate) grpc: Option<&'static str>,
    /// Public host name for edge services (their server spans are the trace roots).
    pub(crate) public_host: Option<&'static str>,
}

pub(crate) const MAX_PODS: usize = 4;

pub(crate) static SERVICES: [ServiceDef; 12] = [
    ServiceDef {
        svc: Svc::Frontend,
        name: "frontend",
        namespace: "shop",
        version: "2.14.3",
        canary_version: "2.15.0",
        lang: Lang::Node,
        pods: 3,
        port: 8080,
        grpc: None,
        public_host: Some("shop.example.com"),
    },
    ServiceDef {
        svc: Svc::Gateway,
        name: "api-gateway",
        namespace: "edge",
        version: "1.31.0",
        canary_version: "1.32.0-rc.1",
        lang: Lang::Go,
        pods: 4,
        port: 8443,
        grpc: None,
        public_host: Some("api.shop.example.com"),
    },
    ServiceDef {
        svc: Svc::Checkout,
        name: "checkout",
        namespace: "shop",
        version: "3.2.1",
        canary_version: "3.2.1",
        lang: Lang::Go,
        pods: 2,
        port: 8080,
        grpc: None,
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Payment,
        name: "payment",
        namespace: "shop",
        version: "5.0.7",
        canary_version: "5.0.7",
        lang: Lang::Java,
        pods: 2,
        port: 9090,
        grpc: Some("shop.payment.v1.PaymentService"),
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Cart,
        name: "cart",
        namespace: "shop",
        version: "1.8.0",
        canary_version: "1.9.0",
        lang: Lang::DotNet,
        pods: 3,
        port: 8080,
        grpc: None,
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Catalog,
        name: "catalog",
        namespace: "shop",
        version: "4.4.2",
        canary_version: "4.5.0",
        lang: Lang::Go,
        pods: 4,
        port: 8080,
        grpc: None,
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Inventory,
        name: "inventory",
        namespace: "shop",
        version: "0.9.12",
        canary_version: "0.9.12",
        lang: Lang::Rust,
        pods: 2,
        port: 9090,
        grpc: Some("shop.inventory.v1.InventoryService"),
        public_host: None,
    },
    ServiceDef {
        svc: Svc::User,
        name: "user",
        namespace: "identity",
        version: "2.3.0",
        canary_version: "2.3.0",
        lang: Lang::Python,
        pods: 2,
        port: 8000,
        grpc: None,
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Auth,
        name: "auth",
        namespace: "identity",
        version: "1.12.4",
        canary_version: "1.13.0",
        lang: Lang::Go,
        pods: 3,
        port: 9090,
        grpc: Some("identity.auth.v1.AuthService"),
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Recommendation,
        name: "recommendation",
        namespace: "shop",
        version: "0.22.0",
        canary_version: "0.22.0",
        lang: Lang::Python,
        pods: 2,
        port: 9090,
        grpc: Some("shop.recommendation.v1.RecommendationService"),
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Shipping,
        name: "shipping",
        namespace: "shop",
        version: "1.4.0",
        canary_version: "1.4.0",
        lang: Lang::Rust,
        pods: 2,
        port: 8080,
        grpc: None,
        public_host: None,
    },
    ServiceDef {
        svc: Svc::Email,
        name: "email",
        namespace: "shop",
        version: "0.7.3",
        canary_version: "0.7.3",
        lang: Lang::Ruby,
        pods: 1,
        port: 8080,
        grpc: None,
        public_host: None,
    },
];

pub(crate) fn service(svc: Svc) -> &'static ServiceDef {
    &SERVICES[svc as usize]
}

pub(crate) struct LangDef {
    pub(crate) sdk_language: &'static str,
    pub(crate) sdk_version: &'static str,
    pub(crate) runtime: (&'static str, &'static str),
    /// Instrumentation scope (name, version) used for the service's spans.
    pub(crate) scope: (&'static str, &'static str),
    /// (exception.type, exception.message, stacktrace template; `{svc}` is replaced).
    pub(crate) exceptions: &'static [(&'static str, &'static str, &'static str)],
}

pub(crate) fn lang(lang: Lang) -> &'static LangDef {
    match lang {
        Lang::Go => &GO,
        Lang::Java => &JAVA,
        Lang::Node => &NODE,
        Lang::Python => &PYTHON,
        Lang::DotNet => &DOTNET,
        Lang::Rust => &RUST,
        Lang::Ruby => &RUBY,
    }
}

static GO: LangDef = LangDef {
    sdk_language: "go",
    sdk_version: "1.38.0",
    runtime: ("go", "go1.25.1"),
    scope: ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp", "0.63.0"),
    exceptions: &[
        (
            "*errors.errorString",
            "unexpected nil pointer in order total",
            "goroutine 1742 [running]:\nruntime/debug.Stack()\n\t/usr/local/go/src/runtime/debug/stack.go:26 +0x5e\n\
             github.com/shop/{svc}/internal/handler.(*Handler).ServeHTTP(0xc000a1e000, {0x1a2b3c0, 0xc0004f2000}, 0xc000312a00)\n\
             \t/src/{svc}/internal/handler/handler.go:148 +0x2d1\nnet/http.HandlerFunc.ServeHTTP(...)\n\t/usr/local/go/src/net/http/server.go:2294",
        ),
        (
            "*net.OpError",
            "dial tcp 10.96.12.4:5432: connect: connection refused",
            "goroutine 88 [running]:\ngithub.com/jackc/pgx/v5/pgconn.connect(...)\n\t/go/pkg/mod/github.com/jackc/pgx/v5@v5.7.2/pgconn/pgconn.go:346\n\
             github.com/shop/{svc}/internal/store.(*Store).Query(0xc0001a4000)\n\t/src/{svc}/internal/store/store.go:91 +0x1b4",
        ),
    ],
};

static JAVA: LangDef = LangDef {
    sdk_language: "java",
    sdk_version: "1.54.1",
    runtime: ("OpenJDK Runtime Environment", "21.0.8+9-LTS"),
    scope: ("io.opentelemetry.grpc-1.6", "2.20.1-alpha"),
    exceptions: &[
        (
            "java.net.SocketTimeoutException",
            "Read timed out",
            "java.net.SocketTimeoutException: Read timed out\n\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:278)\n\
             \tat java.base/java.net.Socket$SocketInputStream.read(Socket.java:1099)\n\
             \tat com.shop.{svc}.gateway.StripeClient.createIntent(StripeClient.java:112)\n\
             \tat com.shop.{svc}.PaymentServiceImpl.charge(PaymentServiceImpl.java:64)",
        ),
        (
            "java.lang.IllegalStateException",
            "payment method has no billing address",
            "java.lang.IllegalStateException: payment method has no billing address\n\
             \tat com.shop.{svc}.domain.PaymentMethod.requireAddress(PaymentMethod.java:41)\n\
             \tat com.shop.{svc}.PaymentServiceImpl.charge(PaymentServiceImpl.java:58)\n\
             \tat io.grpc.stub.ServerCalls$UnaryServerCallHandler$UnaryServerCallListener.onHalfClose(ServerCalls.java:182)",
        ),
    ],
};

static NODE: LangDef = LangDef {
    sdk_language: "nodejs",
    sdk_version: "2.1.0",
    runtime: ("nodejs", "22.19.0"),
    scope: ("@opentelemetry/instrumentation-http", "0.205.0"),
    exceptions: &[
        (
            "TypeError",
            "Cannot read properties of undefined (reading 'priceCents')",
            "TypeError: Cannot read properties of undefined (reading 'priceCents')\n\
             \x20   at renderProduct (/app/{svc}/src/pages/product.js:42:31)\n\
             \x20   at async handler (/app/{svc}/src/server.js:118:5)",
        ),
        (
            "Error",
            "upstream request failed with status 503",
            "Error: upstream request failed with status 503\n\
             \x20   at fetchJson (/app/{svc}/src/lib/http.js:27:11)\n\
             \x20   at process.processTicksAndRejections (node:internal/process/task_queues:105:5)",
        ),
    ],
};

static PYTHON: LangDef = LangDef {
    sdk_language: "python",
    sdk_version: "1.37.0",
    runtime: ("cpython", "3.12.11"),
    scope: ("opentelemetry.instrumentation.flask", "0.58b0"),
    exceptions: &[
        (
            "psycopg.errors.QueryCanceled",
            "canceling statement due to statement timeout",
            "Traceback (most recent call last):\n  File \"/app/{svc}/db.py\", line 51, in fetch\n    \
             cur.execute(query, params)\n  File \"/usr/local/lib/python3.12/site-packages/psycopg/cursor.py\", line 97, in execute\n    \
             raise ex.with_traceback(None)\npsycopg.errors.QueryCanceled: canceling statement due to statement timeout",
        ),
        (
            "KeyError",
            "'embedding'",
            "Traceback (most recent call last):\n  File \"/app/{svc}/model.py\", line 88, in score\n    \
             vec = item[\"embedding\"]\nKeyError: 'embedding'",
        ),
    ],
};

static DOTNET: LangDef = LangDef {
    sdk_language: "dotnet",
    sdk_version: "1.12.0",
    runtime: (".NET", "9.0.8"),
    scope: ("OpenTelemetry.Instrumentation.AspNetCore", "1.12.0"),
    exceptions: &[(
        "StackExchange.Redis.RedisTimeoutException",
        "Timeout performing HGETALL (5000ms), inst: 2, qu: 0, qs: 41, aw: False",
        "StackExchange.Redis.RedisTimeoutException: Timeout performing HGETALL (5000ms)\n\
         \x20  at StackExchange.Redis.ConnectionMultiplexer.ExecuteSyncImpl[T](Message message, ResultProcessor`1 processor)\n\
         \x20  at Shop.{svc}.CartStore.GetCartAsync(String userId) in /src/{svc}/CartStore.cs:line 57",
    )],
};

static RUST: LangDef = LangDef {
    sdk_language: "rust",
    sdk_version: "0.31.0",
    runtime: ("rustc", "1.90.0"),
    scope: ("tracing-opentelemetry", "0.32.0"),
    exceptions: &[(
        "sqlx::Error",
        "pool timed out while waiting for an open connection",
        "   0: {svc}::store::reserve\n             at ./src/store.rs:77:14\n   1: {svc}::service::handle\n             at ./src/service.rs:131:9",
    )],
};

static RUBY: LangDef = LangDef {
    sdk_language: "ruby",
    sdk_version: "1.5.0",
    runtime: ("ruby", "3.4.5"),
    scope: ("OpenTelemetry::Instrumentation::Rack", "0.27.0"),
    exceptions: &[(
        "Net::ReadTimeout",
        "Net::ReadTimeout with #<TCPSocket:(closed)>",
        "/usr/local/lib/ruby/3.4.0/net/protocol.rb:229:in `rbuf_fill'\n/app/{svc}/lib/mailer.rb:31:in `deliver'\n/app/{svc}/lib/consumer.rb:18:in `process'",
    )],
};

/// Operations, indexing [`OPS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum O {
    FeHome,
    FeProduct,
    FeCart,
    FeAddToCart,
    FeCheckout,
    GwProducts,
    GwProduct,
    GwOrders,
    GwLogin,
    GwCheckout,
    CoPlaceOrder,
    PayCharge,
    CartGet,
    CartAdd,
    CartEmpty,
    CatList,
    CatGet,
    CatBatch,
    InvCheck,
    InvReserve,
    UserGet,
    UserOrders,
    UserLogin,
    AuthValidate,
    AuthIssue,
    RecList,
    ShipQuote,
    ShipConsume,
    EmailConsume,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// HTTP server (method, route) or gRPC server (route = method name) depending on the service.
    Server,
    /// Kafka consumer of the given topic.
    Consumer { topic: &'static str },
}

pub(crate) struct Op {
    pub(crate) id: O,
    pub(crate) svc: Svc,
    pub(crate) kind: OpKind,
    /// HTTP method; empty for gRPC and consumers.
    pub(crate) method: &'static str,
    /// HTTP route template, gRPC method name, or consumer operation.
    pub(crate) route: &'static str,
    pub(crate) ok_code: u16,
    /// Median self time in milliseconds (time not spent in downstream calls).
    pub(crate) self_ms: f64,
    pub(crate) p4xx: f64,
    pub(crate) codes4xx: &'static [u16],
    pub(crate) p5xx: f64,
    /// Probability that a cache lookup misses (enables `miss_only` calls).
    pub(crate) miss_rate: f64,
    /// Downstream calls run concurrently (fan-out) instead of one after the other.
    pub(crate) parallel: bool,
    pub(crate) calls: &'static [Call],
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Repeat {
    Once,
    /// Once per item of the trace's cart (an N+1 pattern).
    PerItem,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    Op(O),
    Db(&'static DbQuery),
    External(&'static External),
    Publish {
        topic: &'static str,
        consumers: &'static [O],
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub(crate) target: Target,
    pub(crate) p: f64,
    pub(crate) repeat: Repeat,
    /// A failure of a critical call fails the caller (usually); others degrade gracefully.
    pub(crate) critical: bool,
    /// Only made when the operation's cache lookup missed.
    pub(crate) miss_only: bool,
}

impl Call {
    const fn to(target: Target) -> Call {
        Call {
            target,
            p: 1.0,
            repeat: Repeat::Once,
            critical: true,
            miss_only: false,
        }
    }
    const fn op(o: O) -> Call {
        Call::to(Target::Op(o))
    }
    const fn db(q: &'static DbQuery) -> Call {
        Call::to(Target::Db(q))
    }
    const fn p(mut self, p: f64) -> Call {
        self.p = p;
        self
    }
    const fn soft(mut self) -> Call {
        self.critical = false;
        self
    }
    const fn per_item(mut self) -> Call {
        self.repeat = Repeat::PerItem;
        self
    }
    const fn on_miss(mut self) -> Call {
        self.miss_only = true;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DbSystem {
    Postgres,
    Redis,
}

#[derive(Debug)]
pub(crate) struct DbQuery {
    pub(crate) system: DbSystem,
    /// db.operation.name
    pub(crate) operation: &'static str,
    /// db.collection.name (table) for SQL; empty for redis.
    pub(crate) collection: &'static str,
    /// db.statement; `{userId}` etc. are filled in (redis keys are high-cardinality on purpose).
    pub(crate) statement: &'static str,
    pub(crate) median_ms: f64,
}

const fn pg(
    operation: &'static str,
    collection: &'static str,
    statement: &'static str,
    median_ms: f64,
) -> DbQuery {
    DbQuery {
        system: DbSystem::Postgres,
        operation,
        collection,
        statement,
        median_ms,
    }
}

const fn redis(operation: &'static str, statement: &'static str) -> DbQuery {
    DbQuery {
        system: DbSystem::Redis,
        operation,
        collection: "",
        statement,
        median_ms: 0.35,
    }
}

/// A third-party HTTPS API: a client span with no server span behind it.
#[derive(Debug)]
pub(crate) struct External {
    pub(crate) method: &'static str,
    pub(crate) host: &'static str,
    pub(crate) path: &'static str,
    pub(crate) median_ms: f64,
}

static Q_PRODUCTS_LIST: DbQuery = pg(
    "SELECT",
    "products",
    "SELECT id, name, price_cents, currency, image_url FROM products WHERE category = $1 ORDER BY rank LIMIT $2 OFFSET $3",
    2.5,
);
static Q_PRODUCT_GET: DbQuery = pg(
    "SELECT",
    "products",
    "SELECT id, name, description, price_cents, currency, image_url FROM products WHERE id = $1",
    1.2,
);
static Q_PRODUCTS_BATCH: DbQuery = pg(
    "SELECT",
    "products",
    "SELECT id, name, price_cents, currency, image_url FROM products WHERE id = ANY($1)",
    1.8,
);
static Q_STOCK_GET: DbQuery = pg(
    "SELECT",
    "stock",
    "SELECT sku, available, reserved FROM stock WHERE sku = $1",
    0.9,
);
static Q_STOCK_RESERVE: DbQuery = pg(
    "UPDATE",
    "stock",
    "UPDATE stock SET reserved = reserved + $2 WHERE sku = $1 AND available - reserved >= $2 RETURNING available",
    1.6,
);
static Q_ORDER_INSERT: DbQuery = pg(
    "INSERT",
    "orders",
    "INSERT INTO orders (id, user_id, total_cents, currency, status, created_at) VALUES ($1, $2, $3, $4, 'placed', now())",
    2.2,
);
static Q_ORDER_ITEMS_INSERT: DbQuery = pg(
    "INSERT",
    "order_items",
    "INSERT INTO order_items (order_id, product_id, quantity, price_cents) SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[])",
    2.0,
);
static Q_PAYMENT_METHOD: DbQuery = pg(
    "SELECT",
    "payment_methods",
    "SELECT id, provider_token, billing_country FROM payment_methods WHERE user_id = $1 AND is_default",
    1.1,
);
static Q_PAYMENT_INSERT: DbQuery = pg(
    "INSERT",
    "payments",
    "INSERT INTO payments (id, order_id, amount_cents, currency, provider_ref, status) VALUES ($1, $2, $3, $4, $5, $6)",
    1.9,
);
static Q_USER_GET: DbQuery = pg(
    "SELECT",
    "users",
    "SELECT id, email, display_name, locale, created_at FROM users WHERE id = $1",
    1.0,
);
static Q_USER_BY_EMAIL: DbQuery = pg(
    "SELECT",
    "users",
    "SELECT id, password_hash, locked FROM users WHERE lower(email) = lower($1)",
    1.4,
);
static Q_ORDERS_BY_USER: DbQuery = pg(
    "SELECT",
    "orders",
    "SELECT id, total_cents, currency, status, created_at FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20",
    3.5,
);
static Q_ORDER_ITEMS_BY_ORDERS: DbQuery = pg(
    "SELECT",
    "order_items",
    "SELECT order_id, product_id, quantity, price_cents FROM order_items WHERE order_id = ANY($1)",
    2.8,
);
static Q_SHIPPING_RATES: DbQuery = pg(
    "SELECT",
    "shipping_rates",
    "SELECT carrier, service_level, price_cents FROM shipping_rates WHERE country = $1 AND max_weight_g >= $2",
    1.3,
);
static Q_SHIPMENT_INSERT: DbQuery = pg(
    "INSERT",
    "shipments",
    "INSERT INTO shipments (order_id, carrier, label_url, status) VALUES ($1, $2, $3, 'label_created')",
    2.1,
);
static R_PRODUCT_GET: DbQuery = redis("GET", "GET product:{productId}");
static R_PRODUCT_SET: DbQuery = redis("SET", "SET product:{productId} ? EX 300");
static R_CART_GET: DbQuery = redis("HGETALL", "HGETALL cart:{userId}");
static R_CART_ADD: DbQuery = redis("HINCRBY", "HINCRBY cart:{userId} {productId} 1");
static R_CART_DEL: DbQuery = redis("DEL", "DEL cart:{userId}");
static R_SESSION_GET: DbQuery = redis("GET", "GET session:{sessionId}");
static R_SESSION_SET: DbQuery = redis("SET", "SET session:{sessionId} ? EX 86400");
static R_USER_GET: DbQuery = redis("GET", "GET user:{userId}");
static R_RECS: DbQuery = redis("ZREVRANGE", "ZREVRANGE recs:{userId} 0 11");
static R_EMAIL_DEDUPE: DbQuery = redis(
    "SET",
    "SET email:order-confirmation:{orderId} 1 NX EX 604800",
);

static X_STRIPE: External = External {
    method: "POST",
    host: "api.stripe.com",
    path: "/v1/payment_intents",
    median_ms: 210.0,
};
static X_CARRIER: External = External {
    method: "POST",
    host: "api.carrier.example.net",
    path: "/v2/labels",
    median_ms: 140.0,
};
static X_SENDGRID: External = External {
    method: "POST",
    host: "api.sendgrid.com",
    path: "/v3/mail/send",
    median_ms: 90.0,
};

const fn server(id: O, svc: Svc, method: &'static str, route: &'static str, self_ms: f64) -> Op {
    Op {
        id,
        svc,
        kind: OpKind::Server,
        method,
        route,
        ok_code: 200,
        self_ms,
        p4xx: 0.0,
        codes4xx: &[],
        p5xx: 0.003,
        miss_rate: 0.0,
        parallel: false,
        calls: &[],
    }
}

const fn grpc(id: O, svc: Svc, method: &'static str, self_ms: f64) -> Op {
    server(id, svc, "", method, self_ms)
}

impl Op {
    const fn calls(mut self, calls: &'static [Call]) -> Op {
        self.calls = calls;
        self
    }
    const fn parallel(mut self) -> Op {
        self.parallel = true;
        self
    }
    const fn client_errors(mut self, p: f64, codes: &'static [u16]) -> Op {
        self.p4xx = p;
        self.codes4xx = codes;
        self
    }
    const fn server_errors(mut self, p: f64) -> Op {
        self.p5xx = p;
        self
    }
    const fn cache(mut self, miss_rate: f64) -> Op {
        self.miss_rate = miss_rate;
        self
    }
    const fn ok(mut self, code: u16) -> Op {
        self.ok_code = code;
        self
    }
    const fn consumer(mut self, topic: &'static str) -> Op {
        self.kind = OpKind::Consumer { topic };
        self
    }
}

pub(crate) static OPS: [Op; 29] = [
    server(O::FeHome, Svc::Frontend, "GET", "/", 4.0)
        .parallel()
        .server_errors(0.0025)
        .calls(&[
            Call::op(O::CatList),
            Call::op(O::RecList).p(0.9).soft(),
            Call::op(O::CartGet).p(0.6).soft(),
        ]),
    server(
        O::FeProduct,
        Svc::Frontend,
        "GET",
        "/product/{productId}",
        3.0,
    )
    .parallel()
    .server_errors(0.0025)
    .calls(&[
        Call::op(O::CatGet),
        Call::op(O::RecList).p(0.85).soft(),
        Call::op(O::InvCheck).p(0.5).soft(),
    ]),
    server(O::FeCart, Svc::Frontend, "GET", "/cart", 2.5)
        .server_errors(0.0025)
        .calls(&[
            Call::op(O::AuthValidate),
            Call::op(O::CartGet),
            Call::op(O::CatGet).per_item(),
        ]),
    server(O::FeAddToCart, Svc::Frontend, "POST", "/api/cart", 1.5)
        .server_errors(0.0025)
        .client_errors(0.018, &[400])
        .ok(201)
        .calls(&[Call::op(O::AuthValidate), Call::op(O::CartAdd)]),
    server(O::FeCheckout, Svc::Frontend, "POST", "/api/checkout", 2.0)
        .server_errors(0.0025)
        .client_errors(0.027, &[400, 422])
        .ok(201)
        .calls(&[Call::op(O::AuthValidate), Call::op(O::CoPlaceOrder)]),
    server(O::GwProducts, Svc::Gateway, "GET", "/v1/products", 0.6)
        .server_errors(0.0013)
        .client_errors(0.0108, &[429])
        .calls(&[Call::op(O::AuthValidate), Call::op(O::CatList)]),
    server(
        O::GwProduct,
        Svc::Gateway,
        "GET",
        "/v1/products/{productId}",
        0.6,
    )
    .server_errors(0.0013)
    .client_errors(0.0108, &[429])
    .calls(&[
        Call::op(O::AuthValidate),
        Call::op(O::CatGet),
        Call::op(O::InvCheck).soft(),
    ]),
    server(
        O::GwOrders,
        Svc::Gateway,
        "GET",
        "/v1/users/{userId}/orders",
        0.6,
    )
    .server_errors(0.0013)
    .client_errors(0.018, &[429, 403])
    .calls(&[
        Call::op(O::AuthValidate),
        Call::op(O::UserGet),
        Call::op(O::UserOrders),
    ]),
    server(O::GwLogin, Svc::Gateway, "POST", "/v1/login", 0.8)
        .server_errors(0.0013)
        .client_errors(0.018, &[429, 400])
        .calls(&[Call::op(O::UserLogin)]),
    server(O::GwCheckout, Svc::Gateway, "POST", "/v1/checkout", 0.7)
        .server_errors(0.0013)
        .client_errors(0.018, &[429, 400])
        .ok(201)
        .calls(&[Call::op(O::AuthValidate), Call::op(O::CoPlaceOrder)]),
    server(
        O::CoPlaceOrder,
        Svc::Checkout,
        "POST",
        "/api/checkout/orders",
        6.0,
    )
    .server_errors(0.01)
    .client_errors(0.018, &[409])
    .ok(201)
    .calls(&[
        Call::op(O::CartGet),
        Call::op(O::CatGet).per_item(),
        Call::op(O::ShipQuote),
        Call::op(O::InvReserve),
        Call::op(O::PayCharge),
        Call::db(&Q_ORDER_INSERT),
        Call::db(&Q_ORDER_ITEMS_INSERT),
        Call::op(O::CartEmpty).p(0.97).soft(),
        Call::to(Target::Publish {
            topic: "orders",
            consumers: &[O::ShipConsume, O::EmailConsume],
        }),
    ]),
    grpc(O::PayCharge, Svc::Payment, "Charge", 8.0)
        .server_errors(0.01)
        .client_errors(0.054, &[402])
        .calls(&[
            Call::db(&Q_PAYMENT_METHOD),
            Call::to(Target::External(&X_STRIPE)),
            Call::db(&Q_PAYMENT_INSERT),
        ]),
    server(O::CartGet, Svc::Cart, "GET", "/api/cart/{userId}", 0.8)
        .server_errors(0.005)
        .calls(&[Call::db(&R_CART_GET)]),
    server(
        O::CartAdd,
        Svc::Cart,
        "POST",
        "/api/cart/{userId}/items",
        1.0,
    )
    .server_errors(0.005)
    .client_errors(0.036, &[400])
    .ok(201)
    .calls(&[Call::op(O::InvCheck), Call::db(&R_CART_ADD)]),
    server(O::CartEmpty, Svc::Cart, "DELETE", "/api/cart/{userId}", 0.5)
        .server_errors(0.005)
        .ok(204)
        .calls(&[Call::db(&R_CART_DEL)]),
    server(O::CatList, Svc::Catalog, "GET", "/api/products", 1.5)
        .server_errors(0.005)
        .calls(&[Call::db(&Q_PRODUCTS_LIST)]),
    server(
        O::CatGet,
        Svc::Catalog,
        "GET",
        "/api/products/{productId}",
        0.7,
    )
    .server_errors(0.0025)
    .client_errors(0.0144, &[404])
    .cache(0.25)
    .calls(&[
        Call::db(&R_PRODUCT_GET),
        Call::db(&Q_PRODUCT_GET).on_miss(),
        Call::db(&R_PRODUCT_SET).on_miss().soft(),
    ]),
    server(
        O::CatBatch,
        Svc::Catalog,
        "POST",
        "/api/products:batchGet",
        1.0,
    )
    .server_errors(0.005)
    .calls(&[Call::db(&Q_PRODUCTS_BATCH)]),
    grpc(O::InvCheck, Svc::Inventory, "CheckStock", 0.4)
        .server_errors(0.005)
        .calls(&[Call::db(&Q_STOCK_GET)]),
    grpc(O::InvReserve, Svc::Inventory, "ReserveStock", 0.8)
        .server_errors(0.0075)
        .client_errors(0.018, &[409])
        .calls(&[Call::db(&Q_STOCK_RESERVE).per_item()]),
    server(O::UserGet, Svc::User, "GET", "/api/users/{userId}", 1.5)
        .server_errors(0.005)
        .client_errors(0.009, &[404])
        .cache(0.3)
        .calls(&[Call::db(&R_USER_GET), Call::db(&Q_USER_GET).on_miss()]),
    server(
        O::UserOrders,
        Svc::User,
        "GET",
        "/api/users/{userId}/orders",
        3.0,
    )
    .server_errors(0.01)
    .calls(&[
        Call::db(&Q_ORDERS_BY_USER),
        Call::db(&Q_ORDER_ITEMS_BY_ORDERS),
    ]),
    server(O::UserLogin, Svc::User, "POST", "/api/users/login", 45.0)
        .server_errors(0.005)
        .client_errors(0.108, &[401])
        .calls(&[Call::db(&Q_USER_BY_EMAIL), Call::op(O::AuthIssue)]),
    grpc(O::AuthValidate, Svc::Auth, "ValidateToken", 0.3)
        .server_errors(0.0037)
        .client_errors(0.045, &[401])
        .calls(&[Call::db(&R_SESSION_GET)]),
    grpc(O::AuthIssue, Svc::Auth, "IssueToken", 1.2)
        .server_errors(0.005)
        .calls(&[Call::db(&R_SESSION_SET)]),
    grpc(O::RecList, Svc::Recommendation, "ListRecommendations", 12.0)
        .server_errors(0.015)
        .calls(&[Call::db(&R_RECS), Call::op(O::CatBatch)]),
    server(
        O::ShipQuote,
        Svc::Shipping,
        "POST",
        "/api/shipping/quote",
        1.2,
    )
    .server_errors(0.005)
    .calls(&[Call::db(&Q_SHIPPING_RATES)]),
    server(O::ShipConsume, Svc::Shipping, "", "process", 1.5)
        .consumer("orders")
        .server_errors(0.01)
        .calls(&[
            Call::to(Target::External(&X_CARRIER)),
            Call::db(&Q_SHIPMENT_INSERT),
        ]),
    server(O::EmailConsume, Svc::Email, "", "process", 3.0)
        .consumer("orders")
        .server_errors(0.01)
        .calls(&[
            Call::db(&R_EMAIL_DEDUPE),
            Call::to(Target::External(&X_SENDGRID)),
        ]),
];

pub(crate) fn op(o: O) -> &'static Op {
    let op = &OPS[o as usize];
    debug_assert_eq!(op.id, o, "OPS must be in the order of O");
    op
}

/// Entry points and their relative weights; the rest of the traffic (see `HEALTH_WEIGHT`) is
/// health probes.
pub(crate) static ENTRIES: &[(O, u32)] = &[
    (O::FeHome, 18),
    (O::FeProduct, 22),
    (O::FeCart, 8),
    (O::FeAddToCart, 7),
    (O::FeCheckout, 3),
    (O::GwProducts, 10),
    (O::GwProduct, 10),
    (O::GwOrders, 5),
    (O::GwLogin, 4),
    (O::GwCheckout, 2),
];

/// Weight of single-span health-check traces relative to [`ENTRIES`].
pub(crate) const HEALTH_WEIGHT: u32 = 6;
