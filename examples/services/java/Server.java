// A Nimbus service in Java: any HTTP server listening on 127.0.0.1:$PORT (JDK only, no build step:
// `java Server.java` runs the source file).
import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;

public class Server {
    public static void main(String[] args) throws Exception {
        int port = Integer.parseInt(System.getenv("PORT"));
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 128);
        server.createContext("/", exchange -> {
            String path = exchange.getRequestURI().getPath();
            byte[] body = path.equals("/healthz")
                ? "ok".getBytes(StandardCharsets.UTF_8)
                : ("{\"language\":\"java\",\"path\":\"" + path + "\",\"pid\":" + ProcessHandle.current().pid() + "}")
                    .getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("content-type", path.equals("/healthz") ? "text/plain" : "application/json");
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
            exchange.close();
        });
        server.setExecutor(Executors.newFixedThreadPool(16));
        // SIGTERM runs the shutdown hooks: stop accepting, give in-flight exchanges a second.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(1)));
        server.start();
        System.out.println("java service on port " + port);
    }
}
