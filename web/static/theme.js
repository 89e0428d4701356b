(()=>{try{localStorage.getItem("inferd.theme")==="light"&&(document.documentElement.dataset.theme="light")}catch{}})();
