// The OpenAPI document is served one level up, at `/api/schema/` (relative, so the UI also
// works when the routes are nested under a prefix).
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: new URL("../", window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};
