// The print page's button: the browser's own print dialog (the page's @media print rules shape the paper).
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-print]").forEach((b) => b.addEventListener("click", () => window.print()));
  document.body.dataset.ready = "1";
});
