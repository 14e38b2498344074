// Follows Airflow's own theme choice: the UI (same origin) keeps it in localStorage "theme"
// ("light", "dark" or "system"); without a choice, prefers-color-scheme decides (CSS).
(function () {
  function apply() {
    var root = document.documentElement;
    var theme = null;
    try { theme = window.localStorage.getItem("theme"); } catch (e) { theme = null; }
    root.classList.remove("light", "dark");
    if (theme === "light" || theme === "dark") { root.classList.add(theme); }
  }
  apply();
  window.addEventListener("storage", function (e) { if (e.key === "theme") { apply(); } });
})();
