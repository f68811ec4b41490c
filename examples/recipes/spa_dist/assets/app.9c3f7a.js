const show = () => {
  document.getElementById("app").textContent = `This is the page for ${location.pathname}`;
};
addEventListener("popstate", show);
show();
