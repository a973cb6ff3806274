// The Restate side of bench/workflows.sh: service `order`, handler `run`, three durable steps that
// do no I/O of their own (like the Nimbus `workflow` fixture's `pure` saga). Each ctx.run result is
// journaled by restate-server and acknowledged before the handler goes on to the next step.
// Serves HTTP/2 (bidirectional protocol) on 127.0.0.1:$PORT.
import http2 from "node:http2";
import * as restate from "@restatedev/restate-sdk";

// The SDK (1.17) calls Promise.withResolvers, which Node has from 22 on; this machine has Node 20.
Promise.withResolvers ??= function () {
    let resolve, reject;
    const promise = new this((res, rej) => ((resolve = res), (reject = rej)));
    return { promise, resolve, reject };
};

const order = restate.service({
    name: "order",
    handlers: {
        run: async (ctx, input) => {
            const reserved = await ctx.run("reserve", () => "reserved");
            const charged = await ctx.run("charge", () => "charged");
            const shipped = await ctx.run("ship", () => "shipped");
            return `${input?.id ?? "?"}: ${reserved}, ${charged}, ${shipped}`;
        },
    },
});

const port = Number(process.env.PORT);
if (!port) throw new Error("PORT is not set");
http2
    .createServer(restate.createEndpointHandler({ services: [order] }))
    .listen(port, "127.0.0.1", () => console.log(`order service on 127.0.0.1:${port}`));
