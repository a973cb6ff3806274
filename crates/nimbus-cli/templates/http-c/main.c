/* {{name}}: an HTTP function in C. A WASI preview1 command that Nimbus runs as a CGI program
 * (WAGI): the request arrives in environment variables (REQUEST_METHOD, PATH_INFO, QUERY_STRING,
 * HTTP_*) and on stdin; the response is CGI headers, an empty line and the body on stdout. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const char *path = getenv("PATH_INFO");
    const char *query = getenv("QUERY_STRING");
    printf("Content-Type: text/plain\n\n");
    printf("Hello from {{name}} (C)! path=%s%s%s\n", path ? path : "/", query && *query ? "?" : "", query ? query : "");
    return 0;
}
