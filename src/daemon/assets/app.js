// Keeps the fleet page current without a reload: every two seconds asks for the overview and the
// page of the list shown (same filters, same page); the daemon answers 304 when nothing changed.
(function () {
  const list = document.getElementById("list");
  if (!list) return;
  let etag = list.dataset.version;
  async function refresh() {
    try {
      const response = await fetch("/fragment/clusters" + window.location.search, {
        headers: etag ? { "If-None-Match": etag } : {},
        cache: "no-store",
      });
      if (response.status === 200) {
        etag = response.headers.get("ETag");
        const fresh = document.createElement("template");
        fresh.innerHTML = await response.text();
        for (const section of fresh.content.querySelectorAll("section[id]")) {
          const old = document.getElementById(section.id);
          if (old) old.replaceWith(section);
        }
      }
    } catch (_) {
      // The daemon restarting: try again on the next tick.
    }
  }
  setInterval(refresh, 2000);
})();
