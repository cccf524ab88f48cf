// Keeps the fleet table current without a reload: asks for the table again every two seconds;
// the daemon answers 304 when nothing changed.
(function () {
  const body = document.querySelector("tbody[data-live]");
  if (!body) return;
  let etag = body.dataset.version;
  async function refresh() {
    try {
      const response = await fetch("/fragment/clusters" + window.location.search, {
        headers: etag ? { "If-None-Match": etag } : {},
        cache: "no-store",
      });
      if (response.status === 200) {
        etag = response.headers.get("ETag");
        body.innerHTML = await response.text();
      }
    } catch (_) {
      // The daemon restarting: try again on the next tick.
    }
  }
  setInterval(refresh, 2000);
})();
